// Pages without a camera, or without any device, still join calls: audio only, or receive-only, and say so.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useServerAndBrowser, openClient, callUser, waitForVideoFrom } from '../lib/harness.js';

const env = useServerAndBrowser();

/** Makes getUserMedia refuse video (`audio: true` still works) or everything. */
async function restrictDevices(page, refuse) {
  await page.addInitScript((mode) => {
    const original = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
    navigator.mediaDevices.getUserMedia = (constraints) => {
      if (mode === 'all' || constraints.video) return Promise.reject(new DOMException('Permission denied', 'NotAllowedError'));
      return original(constraints);
    };
  }, refuse);
}

test('a page without a camera joins with audio only; one without devices receives only', async () => {
  const withCamera = await openClient(env.browser.context, env.server, 'vera');
  const audioOnly = await env.browser.context.newPage();
  await restrictDevices(audioOnly, 'video');
  await audioOnly.goto(env.server.url);
  await audioOnly.getByLabel('Your name').fill('otto');
  await audioOnly.getByRole('button', { name: 'Join', exact: true }).click();
  await audioOnly.locator('#lobby-view').waitFor({ state: 'visible' });

  await callUser(audioOnly, 'vera');
  await withCamera.getByRole('button', { name: 'Accept' }).click();
  await audioOnly.getByText('No camera available: you join with audio only.').waitFor();
  // otto sees vera's video although he sends none.
  await waitForVideoFrom(audioOnly, ['vera']);
  assert.equal(await audioOnly.getByRole('button', { name: 'Camera off' }).isDisabled(), true);
  await audioOnly.getByRole('button', { name: 'Hang up' }).click();

  const receiveOnly = await env.browser.context.newPage();
  await restrictDevices(receiveOnly, 'all');
  await receiveOnly.goto(env.server.url);
  await receiveOnly.getByLabel('Your name').fill('rita');
  await receiveOnly.getByRole('button', { name: 'Join', exact: true }).click();
  await receiveOnly.locator('#lobby-view').waitFor({ state: 'visible' });
  await callUser(withCamera, 'rita');
  await receiveOnly.getByRole('button', { name: 'Accept' }).click();
  await receiveOnly.getByText('No camera or microphone available').waitFor();
  await waitForVideoFrom(receiveOnly, ['vera']);
  for (const page of [withCamera, audioOnly, receiveOnly]) await page.close();
});
