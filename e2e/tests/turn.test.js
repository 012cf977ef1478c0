// Calls relayed through the built-in TURN server: two pages with iceTransportPolicy 'relay', using the short-lived
// credentials each got in its login reply.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useServerAndBrowser, login, callUser, waitForVideoFrom } from '../lib/harness.js';

// The relays of both pages live on 127.0.0.1, which TURN refuses as a peer unless told otherwise.
const env = useServerAndBrowser(['--turn-allow-peer', '127.0.0.1/32']);

test('two pages call through TURN only, with credentials from the login reply', async () => {
  const pages = [];
  for (const name of ['ruth', 'rolf']) {
    const page = await env.browser.context.newPage();
    await page.goto(`${env.server.url}/?relay`);
    await login(page, name);
    pages.push(page);
  }
  const [ruth, rolf] = pages;
  const ice = await ruth.evaluate(() => window.switchboard.client.iceServers);
  const turn = ice.find((s) => s.urls.some((u) => u.startsWith('turn:')));
  assert.ok(turn && turn.username.endsWith(':ruth') && turn.credential, JSON.stringify(ice));

  await callUser(ruth, 'rolf');
  await rolf.getByRole('button', { name: 'Accept' }).click();
  const stats = await waitForVideoFrom(ruth, ['rolf'], 30000);
  await waitForVideoFrom(rolf, ['ruth'], 30000);
  assert.equal(stats.rolf.path, 'relay', JSON.stringify(stats));
  assert.equal(stats.rolf.localCandidateType, 'relay');
  await ruth.locator('#quality').filter({ hasText: 'relayed (TURN)' }).waitFor();
  for (const page of pages) await page.close();
});
