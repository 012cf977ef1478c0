// Losing the signaling WebSocket mid-call: the page shows a banner, reconnects, resumes its session, and the call
// (a peer-to-peer connection that never depended on the WebSocket) goes on.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useServerAndBrowser, openClient, callUser, waitForVideoFrom } from '../lib/harness.js';

const env = useServerAndBrowser();

test('the WebSocket drops mid-call, the page resumes and the call survives', async () => {
  const alice = await openClient(env.browser.context, env.server, 'alice');
  const bob = await openClient(env.browser.context, env.server, 'bob');
  await callUser(alice, 'bob');
  await bob.getByRole('button', { name: 'Accept' }).click();
  await waitForVideoFrom(alice, ['bob']);
  await waitForVideoFrom(bob, ['alice']);
  const tokenBefore = await alice.evaluate(() => window.switchboard.client.resumeToken);

  await alice.evaluate(() => window.switchboard.client.dropConnection());
  await alice.getByText('Connection lost. Reconnecting…').waitFor();
  await alice.locator('#banner').waitFor({ state: 'hidden', timeout: 15000 });
  const after = await alice.evaluate(() => ({ state: window.switchboard.client.state, token: window.switchboard.client.resumeToken }));
  assert.equal(after.state, 'open');
  assert.notEqual(after.token, tokenBefore, 'a resume hands out a new token');

  // Still in the same call: video keeps flowing, chat works, bob saw no hang-up.
  const before = (await alice.evaluate(() => window.switchboard.stats())).bob.framesDecoded;
  await alice.waitForTimeout(1000);
  const later = (await alice.evaluate(() => window.switchboard.stats())).bob.framesDecoded;
  assert.ok(later > before, `video keeps decoding (${before} -> ${later})`);
  assert.equal(await bob.locator('#call-view').isVisible(), true);
  await alice.getByLabel('Message').fill('still here');
  await alice.getByRole('button', { name: 'Send' }).click();
  await bob.locator('#chat-log li', { hasText: 'still here' }).waitFor();

  // The server still knows the call: hanging up from the resumed page reaches bob.
  await alice.getByRole('button', { name: 'Hang up' }).click();
  await bob.getByText('alice hung up.').waitFor();
  await alice.close();
  await bob.close();
});
