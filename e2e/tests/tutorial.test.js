// The classic tutorial client (a fixture page speaking only the tutorial dialect) and the web client call each
// other, with video both ways.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useServerAndBrowser, openClient, openTutorial, waitForUser, callUser, waitForVideoFrom, waitForTutorialVideo } from '../lib/harness.js';

const env = useServerAndBrowser();

test('a tutorial page calls the web client', async () => {
  const tutor = await openTutorial(env.browser.context, env.server, 'tutor');
  const wendy = await openClient(env.browser.context, env.server, 'wendy');
  await waitForUser(wendy, 'tutor');
  await tutor.locator('#userlist li[data-user="wendy"]').click();
  await wendy.getByRole('dialog', { name: 'Incoming call' }).waitFor();
  assert.match(await wendy.locator('#incoming-dialog').textContent(), /tutor is calling \(classic client\)/);
  await wendy.getByRole('button', { name: 'Accept' }).click();
  await waitForVideoFrom(wendy, ['tutor']);
  await waitForTutorialVideo(tutor);
  // The tutorial page learned the caller's name from the server, not from anything the web client claimed.
  const answer = await tutor.evaluate(() => window.tutorial.messages.find((m) => m.type === 'answer'));
  assert.equal(answer.name, 'wendy');
  await wendy.getByRole('button', { name: 'Hang up' }).click();
  await tutor.close();
  await wendy.close();
});

test('the web client calls a tutorial page', async () => {
  const tutor = await openTutorial(env.browser.context, env.server, 'tina');
  const walt = await openClient(env.browser.context, env.server, 'walt');
  await tutor.locator('#userlist li[data-user="walt"]').waitFor();
  await callUser(walt, 'tina');
  await waitForVideoFrom(walt, ['tina']);
  await waitForTutorialVideo(tutor);
  const offer = await tutor.evaluate(() => window.tutorial.messages.find((m) => m.type === 'offer'));
  assert.equal(offer.name, 'walt');
  assert.equal(offer.TargetUserName, 'tina');
  // Closing the tutorial page (its only way to hang up) ends the call in the web client.
  await tutor.close();
  await walt.getByText('tina lost their connection.').waitFor();
  await walt.close();
});
