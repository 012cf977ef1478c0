// Cluster mode in the browser: two Switchboard nodes sharing one redis-server, a page on each, in a video call.
// Signaling between the pages crosses nodes through Redis; the media goes peer to peer as usual.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startRedis, startServer, launchBrowser, openClient, openTutorial, waitForUser, callUser, waitForVideoFrom,
  waitForTutorialVideo, screenshot, HOOK_TIMEOUT_MS,
} from '../lib/harness.js';

const env = { redis: null, nodes: [], browser: null };
// Each hook and test gets less than the runner's 180 s (HOOK_TIMEOUT_MS), so that a hang is reported as the step it
// is in.

before(async () => {
  env.redis = await startRedis();
  // One TURN secret on both nodes, as a real cluster has: credentials minted by either are valid on both.
  const args = ['--cluster', env.redis.url, '--turn-secret', 'e2e-cluster-secret'];
  // Pushed one by one, so that a node that started is stopped even when the next one fails to.
  env.nodes.push(await startServer(args));
  env.nodes.push(await startServer(args));
  env.browser = await launchBrowser();
}, { timeout: HOOK_TIMEOUT_MS });

after(async () => {
  try {
    await env.browser?.close();
  } finally {
    for (const node of env.nodes) await node.stop();
    await env.redis?.stop();
  }
}, { timeout: HOOK_TIMEOUT_MS });

test('two pages on two nodes see each other and call with video both ways', { timeout: HOOK_TIMEOUT_MS }, async () => {
  const [nodeA, nodeB] = env.nodes;
  assert.notEqual(nodeA.url, nodeB.url);
  const alice = await openClient(env.browser.context, nodeA, 'alice');
  const bob = await openClient(env.browser.context, nodeB, 'bob');
  // Presence crosses nodes both ways.
  await waitForUser(alice, 'bob', 'idle');
  await waitForUser(bob, 'alice', 'idle');

  await callUser(alice, 'bob');
  const dialog = bob.getByRole('dialog', { name: 'Incoming call' });
  await dialog.waitFor();
  assert.equal(await bob.locator('#incoming-name').textContent(), 'alice');
  await bob.getByRole('button', { name: 'Accept' }).click();

  const aliceStats = await waitForVideoFrom(alice, ['bob'], 30000);
  const bobStats = await waitForVideoFrom(bob, ['alice'], 30000);
  assert.ok(aliceStats.bob.framesDecoded > 0 && bobStats.alice.framesDecoded > 0);
  await screenshot(alice, 'cluster-call-node-a');

  // Call state crosses nodes too: the status on the other node's page follows the call.
  await alice.getByLabel('Message').fill('hello from node A');
  await alice.getByRole('button', { name: 'Send' }).click();
  await bob.locator('#chat-log li', { hasText: 'hello from node A' }).waitFor();
  await alice.waitForFunction(() => window.switchboard.client.users.get('bob') === 'in-call');

  await bob.getByRole('button', { name: 'Hang up' }).click();
  await alice.getByText('bob hung up.').waitFor();
  await waitForUser(alice, 'bob', 'idle');

  // Signing out on one node removes the user from the other node's list. (A closed tab would stay listed for the
  // resume grace period, as on a single node.)
  await bob.getByRole('button', { name: 'Sign out' }).click();
  await alice.locator('#user-list li[data-user="bob"]').waitFor({ state: 'detached', timeout: 15000 });
  await bob.close();
  await alice.close();
});

test('a tutorial page on one node calls the web client on the other', { timeout: HOOK_TIMEOUT_MS }, async () => {
  const [nodeA, nodeB] = env.nodes;
  const tutor = await openTutorial(env.browser.context, nodeA, 'tutor');
  const wendy = await openClient(env.browser.context, nodeB, 'wendy');
  await waitForUser(wendy, 'tutor');
  await tutor.locator('#userlist li[data-user="wendy"]').waitFor();
  await tutor.locator('#userlist li[data-user="wendy"]').click();
  await wendy.getByRole('dialog', { name: 'Incoming call' }).waitFor();
  await wendy.getByRole('button', { name: 'Accept' }).click();
  await waitForVideoFrom(wendy, ['tutor'], 30000);
  await waitForTutorialVideo(tutor, 30000);
  await wendy.getByRole('button', { name: 'Hang up' }).click();
  await tutor.close();
  await wendy.close();
});
