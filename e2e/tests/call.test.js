// 1:1 calls between two web clients: video both ways, chat both ways, hang up; reject, cancel, busy, no-answer.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useServerAndBrowser, openClient, callUser, waitForUser, waitForVideoFrom, screenshot } from '../lib/harness.js';

const env = useServerAndBrowser(['--ring-timeout', '3s']);

test('alice calls bob, both see video, chat both ways, hang up', async () => {
  const alice = await openClient(env.browser.context, env.server, 'alice');
  const bob = await openClient(env.browser.context, env.server, 'bob');
  await waitForUser(alice, 'bob', 'idle');
  await screenshot(alice, 'lobby');
  await callUser(alice, 'bob');
  await alice.getByText('Ringing bob…').waitFor();
  const dialog = bob.getByRole('dialog', { name: 'Incoming call' });
  await dialog.waitFor();
  assert.equal(await bob.locator('#incoming-name').textContent(), 'alice');
  await screenshot(bob, 'incoming-call');
  await bob.getByRole('button', { name: 'Accept' }).click();

  const aliceStats = await waitForVideoFrom(alice, ['bob']);
  const bobStats = await waitForVideoFrom(bob, ['alice']);
  assert.ok(aliceStats.bob.framesDecoded > 0 && bobStats.alice.framesDecoded > 0);
  assert.equal(aliceStats.bob.path, 'direct');

  await alice.getByLabel('Message').fill('hello bob');
  await alice.getByRole('button', { name: 'Send' }).click();
  await bob.locator('#chat-log li', { hasText: 'hello bob' }).waitFor();
  await bob.getByLabel('Message').fill('hi alice');
  await bob.getByRole('button', { name: 'Send' }).click();
  await alice.locator('#chat-log li', { hasText: 'hi alice' }).waitFor();
  assert.equal(await alice.locator('#chat-log li .from').last().textContent(), 'bob');

  await alice.locator('#quality').filter({ hasText: 'RTT' }).waitFor();
  // The lobby is hidden during a call; the SDK's presence view shows the status.
  assert.equal(await bob.evaluate(() => window.switchboard.client.users.get('alice')), 'in-call');
  await screenshot(alice, 'active-call');

  await alice.getByRole('button', { name: 'Hang up' }).click();
  await alice.locator('#lobby-view').waitFor({ state: 'visible' });
  await bob.locator('#lobby-view').waitFor({ state: 'visible' });
  await bob.getByText('alice hung up.').waitFor();
  await waitForUser(bob, 'alice', 'idle');
  await alice.close();
  await bob.close();
});

test('reject, cancel, busy and no-answer are shown to the caller', async () => {
  const carol = await openClient(env.browser.context, env.server, 'carol');
  const dave = await openClient(env.browser.context, env.server, 'dave');
  const erin = await openClient(env.browser.context, env.server, 'erin');

  // Reject.
  await callUser(carol, 'dave');
  await dave.getByRole('button', { name: 'Reject' }).click();
  await carol.getByText('dave declined the call.').waitFor();

  // Cancel.
  await callUser(carol, 'dave');
  await dave.getByRole('dialog', { name: 'Incoming call' }).waitFor();
  await carol.getByRole('button', { name: 'Cancel' }).click();
  await carol.getByText('Call cancelled.').waitFor();
  await dave.getByRole('dialog', { name: 'Incoming call' }).waitFor({ state: 'hidden' });
  await dave.getByText('carol cancelled the call.').waitFor();

  // Busy: erin calls dave while dave is in a call with carol.
  await callUser(carol, 'dave');
  await dave.getByRole('button', { name: 'Accept' }).click();
  await waitForVideoFrom(carol, ['dave']);
  await waitForUser(erin, 'dave', 'in-call');
  assert.equal(await erin.getByRole('button', { name: 'Call dave', exact: true }).isDisabled(), true);
  // The button is disabled for people in a call; ask through the SDK as a stale list would.
  const code = await erin.evaluate(() => window.switchboard.client.call('dave').then(() => 'rang', (e) => e.code));
  assert.equal(code, 'busy');
  await carol.getByRole('button', { name: 'Hang up' }).click();
  await dave.getByText('carol hung up.').waitFor();

  // No answer (the server runs with --ring-timeout 3s).
  await callUser(erin, 'dave');
  await dave.getByRole('dialog', { name: 'Incoming call' }).waitFor();
  await erin.getByText('dave did not answer.').waitFor({ timeout: 10000 });
  await dave.getByRole('dialog', { name: 'Incoming call' }).waitFor({ state: 'hidden' });
  for (const page of [carol, dave, erin]) await page.close();
});

test('a user name with HTML shows as text and runs nothing', async () => {
  const page = await openClient(env.browser.context, env.server, null);
  const hostile = '<img src=x onerror=alert(1)>';
  let dialogs = 0;
  page.on('dialog', async (dialog) => { dialogs += 1; await dialog.dismiss(); });
  await page.getByLabel('Your name').fill(hostile);
  await page.getByRole('button', { name: 'Join', exact: true }).click();
  await page.getByText('Names use letters, digits').waitFor();
  assert.equal(await page.locator('img').count(), 0);
  // A name the server accepts that looks like markup in chat: rendered as text too.
  await page.getByLabel('Your name').fill('mallory');
  await page.getByRole('button', { name: 'Join', exact: true }).click();
  await page.locator('#lobby-view').waitFor({ state: 'visible' });
  const other = await openClient(env.browser.context, env.server, 'trent');
  await callUser(other, 'mallory');
  await page.getByRole('button', { name: 'Accept' }).click();
  await waitForVideoFrom(other, ['mallory']);
  await other.getByLabel('Message').fill(hostile);
  await other.getByRole('button', { name: 'Send' }).click();
  await page.locator('#chat-log li .text', { hasText: hostile }).waitFor();
  assert.equal(await page.locator('#chat-log img').count(), 0);
  assert.equal(dialogs, 0);
  await page.close();
  await other.close();
});
