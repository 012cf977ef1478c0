// WebSocket compression with a real browser: Chromium offers permessage-deflate on every WebSocket, the server
// accepts it, compresses the lobby list it sends (a welcome for a crowd of users, then the deltas as more arrive) and
// inflates what the browser compresses. The web client must show every user, as without compression.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useServerAndBrowser, openClient, waitForUser } from '../lib/harness.js';

// One page opens a crowd of sockets at once: lift the per-address connection rate.
const env = useServerAndBrowser(['--connect-rate-per-ip', '0']);

/** Logs in `names` over raw WebSockets from a page (the browser compresses its messages); resolves when all are in. */
async function crowd(page, names) {
  await page.evaluate(async ({ url, names }) => {
    window.crowd = window.crowd || [];
    await Promise.all(names.map((name) => new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      window.crowd.push(ws);
      ws.onopen = () => ws.send(JSON.stringify({ type: 'login', id: 1, name, presence: 'compact' }));
      ws.onmessage = (event) => {
        const message = JSON.parse(event.data);
        if (message.type === 'welcome') resolve();
        if (message.type === 'error') reject(new Error(`${name}: ${message.code}`));
      };
      ws.onerror = () => reject(new Error(`${name}: socket error`));
    })));
  }, { url: env.server.wsUrl, names });
}

async function metric(name) {
  const text = await (await fetch(`${env.server.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(' ')[1]) : NaN;
}

test('the web client shows a crowd whose lists come compressed', async () => {
  const host = await env.browser.context.newPage();
  await host.goto(env.server.url);
  const first = Array.from({ length: 150 }, (_, i) => `crowd-member-${String(i).padStart(3, '0')}`);
  await crowd(host, first);

  // The welcome's lobby list (150 names, several kilobytes) is a compressed piece.
  const viewer = await openClient(env.browser.context, env.server, 'viewer');
  await waitForUser(viewer, 'crowd-member-149', 'idle');
  await waitForUser(viewer, 'crowd-member-000', 'idle');

  // More arrive at once: their presence delta is compressed too.
  const second = Array.from({ length: 60 }, (_, i) => `late-arrival-${String(i).padStart(2, '0')}`);
  await crowd(host, second);
  // They may come in more than one presence tick. The list shows the viewer too.
  const everyone = first.length + second.length + 1;
  await viewer.waitForFunction((n) => document.querySelectorAll('#user-list li').length === n, everyone);
  await waitForUser(viewer, 'late-arrival-59', 'idle');
  assert.equal(await viewer.evaluate(() => window.switchboard.client.users.size), everyone);

  // Every browser WebSocket negotiated compression: the crowd's 210, the viewer's.
  const upgrades = await metric('switchboard_websocket_upgrades_total');
  assert.ok(upgrades >= 211, `${upgrades} upgrades`);
  assert.equal(await metric('switchboard_websocket_compressed_upgrades_total'), upgrades);

  // The browser's compressed requests are understood: a `users` request gets the whole (compressed) list back.
  const listed = await viewer.evaluate(async () => (await window.switchboard.client.listUsers()).length);
  assert.equal(listed, everyone);
  await host.close();
  await viewer.close();
});
