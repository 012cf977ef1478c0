// Group (mesh) calls: three pages in one room each decode two remote videos; when one leaves, the others' grids
// shrink.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useServerAndBrowser, openClient, waitForVideoFrom, screenshot } from '../lib/harness.js';

const env = useServerAndBrowser();

async function joinRoom(page, room) {
  await page.getByLabel('Room name').fill(room);
  await page.getByRole('button', { name: 'Join room' }).click();
  await page.locator('#call-view').waitFor({ state: 'visible' });
}

test('three pages in a room see each other; one leaves and the grids update', async () => {
  const names = ['ann', 'ben', 'cat'];
  const pages = [];
  for (const name of names) {
    const page = await openClient(env.browser.context, env.server, name);
    await joinRoom(page, 'standup');
    pages.push(page);
  }
  for (const [i, page] of pages.entries()) {
    const others = names.filter((_, j) => j !== i);
    await waitForVideoFrom(page, others, 30000);
    await page.locator('#video-grid figure').nth(2).waitFor();
    assert.equal(await page.locator('#video-grid figure').count(), 3, `${names[i]} sees three tiles`);
  }
  await screenshot(pages[0], 'room');

  await pages[2].getByRole('button', { name: 'Leave room' }).click();
  await pages[2].locator('#lobby-view').waitFor({ state: 'visible' });
  for (const page of pages.slice(0, 2)) {
    await page.locator('#video-grid figure[data-peer="cat"]').waitFor({ state: 'detached' });
    assert.equal(await page.locator('#video-grid figure').count(), 2);
    assert.deepEqual(Object.keys(await page.evaluate(() => window.switchboard.stats())).length, 1);
  }
  for (const page of pages) await page.close();
});
