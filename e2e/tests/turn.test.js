// Calls relayed through the built-in TURN server: two pages with iceTransportPolicy 'relay', using the short-lived
// credentials each got in its login reply.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, login, callUser, waitForVideoFrom } from '../lib/harness.js';

let server;
let browser;

before(async () => {
  // The relays of both pages live on 127.0.0.1, which TURN refuses as a peer unless told otherwise.
  server = await startServer(['--turn-allow-peer', '127.0.0.1/32']);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test('two pages call through TURN only, with credentials from the login reply', async () => {
  const pages = [];
  for (const name of ['ruth', 'rolf']) {
    const page = await browser.context.newPage();
    await page.goto(`${server.url}/?relay`);
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
