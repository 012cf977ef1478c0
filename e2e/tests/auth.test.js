// Sign-in links and room passwords in the web client, against a server in token mode: a page opened with
// `?token=...` logs in as the token's user (and drops the token from its address bar), a page without one is told
// so, and a room created with a password asks later joiners for it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import path from 'node:path';
import { useServerAndBrowser, repoRoot } from '../lib/harness.js';

const SECRET = 'e2e-secret-of-at-least-thirty-two-bytes';
const SERVER = process.env.SWITCHBOARD_BIN || path.join(repoRoot, 'target', 'debug', 'switchboard');

const env = useServerAndBrowser(['--auth', 'token', '--auth-secret', SECRET]);

/** A token printed by `switchboard token`. */
async function mint(name) {
  const { stdout } = await promisify(execFile)(SERVER, ['token', '--name', name, '--auth-secret', SECRET], { timeout: 10000 });
  return stdout.trim();
}

async function openWithToken(name) {
  const page = await env.browser.context.newPage();
  page.on('pageerror', (error) => console.error(`[${name}] page error:`, error.message));
  await page.goto(`${env.server.url}/?token=${await mint(name)}`);
  const input = page.getByLabel('Your name');
  assert.equal(await input.inputValue(), name, 'the name comes from the token');
  assert.equal(await input.getAttribute('readonly'), '', 'and cannot be changed');
  assert.ok(!page.url().includes('token='), `the token leaves the address bar: ${page.url()}`);
  await page.getByRole('button', { name: 'Join', exact: true }).click();
  await page.locator('#lobby-view').waitFor({ state: 'visible' });
  return page;
}

async function joinRoom(page, room, password) {
  await page.getByLabel('Room name').fill(room);
  await page.getByLabel('Room password').fill(password);
  await page.getByRole('button', { name: 'Join room' }).click();
}

test('a page without a sign-in link is told it needs one', async () => {
  const page = await env.browser.context.newPage();
  await page.goto(env.server.url);
  await page.getByLabel('Your name').fill('nobody');
  await page.getByRole('button', { name: 'Join', exact: true }).click();
  await page.locator('#login-error', { hasText: 'sign-in links only' }).waitFor();
  await page.close();
});

test('a sign-in link logs in as its user; a room password keeps others out until they give it', async () => {
  const ann = await openWithToken('ann');
  await joinRoom(ann, 'vault', 'open sesame');
  await ann.locator('#call-view').waitFor({ state: 'visible' });

  const ben = await openWithToken('ben');
  await joinRoom(ben, 'vault', '');
  await ben.locator('#room-error', { hasText: 'needs a password' }).waitFor();
  await joinRoom(ben, 'vault', 'open says me');
  await ben.locator('#room-error', { hasText: 'Wrong password' }).waitFor();
  await joinRoom(ben, 'vault', 'open sesame');
  await ben.locator('#call-view').waitFor({ state: 'visible' });
  await ann.locator('#video-grid figure[data-peer="ben"]').waitFor();

  // Reloading keeps the tab signed in by its link.
  await ben.reload();
  assert.equal(await ben.getByLabel('Your name').inputValue(), 'ben');
  for (const page of [ann, ben]) await page.close();
});
