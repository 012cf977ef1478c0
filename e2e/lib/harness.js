// Shared helpers of the browser tests: a real Switchboard server and real headless Chromium (Debian's package) with
// fake camera and microphone. The runner (e2e/run.sh) puts this process in a network namespace that has only `lo`,
// so servers, browsers and every WebRTC candidate stay on loopback.

import { spawn } from 'node:child_process';
import { mkdtemp, mkdir, readFile, rm } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { before, after } from 'node:test';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, '..', '..');
export const artifactsDir = path.join(repoRoot, 'test-artifacts');

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SERVER = process.env.SWITCHBOARD_BIN || path.join(repoRoot, 'target', 'debug', 'switchboard');
const STOP_TIMEOUT_MS = 20000;
/** Each hook stays under the runner's 180 s per test, so that a hang is reported as the step it is in. */
export const HOOK_TIMEOUT_MS = 60000;

/** Starts `switchboard` on an ephemeral loopback port; resolves with { url, wsUrl, stop, output }. */
export async function startServer(extraArgs = []) {
  const child = spawn(SERVER, ['--http', '127.0.0.1:0', '--turn', '127.0.0.1:0', ...extraArgs], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${output}`)), 15000);
    const onData = (chunk) => {
      output += chunk;
      const match = output.match(/http:\/\/127\.0\.0\.1:\d+/);
      if (match) {
        clearTimeout(timer);
        resolve(match[0]);
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', (chunk) => { output += chunk; });
    child.on('exit', (code) => reject(new Error(`server exited with ${code}:\n${output}`)));
  });
  return {
    url,
    wsUrl: `${url.replace('http:', 'ws:')}/ws`,
    output: () => output,
    // The server drains for at most its --shutdown-timeout (10 s): one still running after twice that is a bug to
    // report, not a hang to wait out until the runner's timeout hides which step it was.
    stop: () => new Promise((resolve, reject) => {
      if (child.exitCode !== null) return resolve();
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`server did not exit within ${STOP_TIMEOUT_MS} ms of SIGTERM:\n${output.slice(-4000)}`));
      }, STOP_TIMEOUT_MS);
      child.once('exit', () => { clearTimeout(timer); resolve(); });
      child.kill('SIGTERM');
    }),
  };
}

/**
 * Starts a `redis-server` of its own (Debian package) on a free loopback port, without persistence; resolves with
 * { url, stop }. Cluster tests point several Switchboard nodes at it.
 */
export async function startRedis() {
  const port = await new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port: free } = probe.address();
      probe.close(() => resolve(free));
    });
  });
  const dir = await mkdtemp(path.join(tmpdir(), 'switchboard-e2e-redis-'));
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  let spawnError = null;
  child.once('error', (error) => { spawnError = error; });
  child.stdout.on('data', (chunk) => { output += chunk; });
  child.stderr.on('data', (chunk) => { output += chunk; });
  const deadline = Date.now() + 10000;
  for (;;) {
    if (spawnError) throw new Error(`cannot start redis-server (Debian package redis-server): ${spawnError.message}`);
    if (child.exitCode !== null) throw new Error(`redis-server exited with ${child.exitCode}:\n${output}`);
    const listening = await new Promise((resolve) => {
      const socket = net.connect(port, '127.0.0.1', () => { socket.destroy(); resolve(true); });
      socket.once('error', () => resolve(false));
    });
    if (listening) break;
    if (Date.now() > deadline) throw new Error(`redis-server did not listen on ${port}:\n${output}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    stop: async () => {
      if (child.exitCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGKILL');
        await exited;
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Launches Chromium with a fresh profile; resolves with { context, close }. */
export async function launchBrowser() {
  const userDataDir = await mkdtemp(path.join(tmpdir(), 'switchboard-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1100, height: 760 },
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--use-fake-device-for-media-stream',
      '--use-fake-ui-for-media-stream',
      '--allow-loopback-in-peer-connection',
      '--autoplay-policy=no-user-gesture-required',
      '--disable-renderer-backgrounding',
    ],
  });
  return {
    context,
    close: async () => {
      await context.close();
      await rm(userDataDir, { recursive: true, force: true });
    },
  };
}

/** Opens the web client in a new tab and logs in as `name`. */
export async function openClient(context, server, name) {
  const page = await context.newPage();
  page.on('pageerror', (error) => console.error(`[${name}] page error:`, error.message));
  await page.goto(server.url);
  if (name) await login(page, name);
  return page;
}

export async function login(page, name) {
  await page.getByLabel('Your name').fill(name);
  await page.getByRole('button', { name: 'Join', exact: true }).click();
  await page.locator('#lobby-view').waitFor({ state: 'visible' });
}

/** Waits until `page` lists `name` online (with `status` when given). */
export async function waitForUser(page, name, status) {
  const item = page.locator(`#user-list li[data-user="${name}"]`);
  await item.waitFor();
  if (status) await item.locator(`.status.${status}`).waitFor();
  return item;
}

export async function callUser(page, name) {
  await waitForUser(page, name, 'idle');
  await page.getByRole('button', { name: `Call ${name}`, exact: true }).click();
}

/** Waits until `page` has decoded video from every peer in `peers`; resolves with its stats. */
export async function waitForVideoFrom(page, peers, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  let stats = {};
  while (Date.now() < deadline) {
    stats = await page.evaluate(() => window.switchboard.stats());
    if (peers.every((peer) => stats[peer] && stats[peer].framesDecoded > 0)) return stats;
    await page.waitForTimeout(250);
  }
  throw new Error(`no decoded video from ${peers.join(', ')} within ${timeoutMs} ms: ${JSON.stringify(stats)}`);
}

/** Saves a screenshot under test-artifacts/. */
export async function screenshot(page, name) {
  await mkdir(artifactsDir, { recursive: true });
  const file = path.join(artifactsDir, `${name}.png`);
  await page.screenshot({ path: file });
  return file;
}

let fixtureServer = null;

/** Serves e2e/fixtures/ on a loopback port of its own, as a tutorial page lives on its own web server. */
async function fixtureOrigin() {
  if (!fixtureServer) {
    const dir = path.join(here, '..', 'fixtures');
    fixtureServer = http.createServer(async (request, response) => {
      const name = path.basename(new URL(request.url, 'http://x').pathname);
      try {
        const body = await readFile(path.join(dir, name));
        response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(body);
      } catch {
        response.writeHead(404).end();
      }
    });
    await new Promise((resolve) => fixtureServer.listen(0, '127.0.0.1', resolve));
    fixtureServer.unref();
  }
  return `http://127.0.0.1:${fixtureServer.address().port}`;
}

/** Opens the tutorial-dialect fixture page (e2e/fixtures/tutorial.html), pointed at `server`. */
export async function openTutorial(context, server, name) {
  const page = await context.newPage();
  page.on('pageerror', (error) => console.error(`[${name}] page error:`, error.message));
  const host = new URL(server.url).host;
  await page.goto(`${await fixtureOrigin()}/tutorial.html?name=${encodeURIComponent(name)}&server=${host}`);
  await page.locator(`#userlist li[data-user="${name}"]`).waitFor();
  return page;
}

/** Waits until the tutorial fixture page has decoded video. */
export async function waitForTutorialVideo(page, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if ((await page.evaluate(() => window.tutorial.framesDecoded())) > 0) return;
    await page.waitForTimeout(250);
  }
  throw new Error('the tutorial page decoded no video');
}

/**
 * Registers node:test hooks that start a server (with `args`) and a browser before the file's tests and stop them
 * after; returns an object whose `server` and `browser` are set once they run.
 */
export function useServerAndBrowser(args = []) {
  const env = { server: null, browser: null };
  before(async () => {
    env.server = await startServer(args);
    env.browser = await launchBrowser();
  }, { timeout: HOOK_TIMEOUT_MS });
  after(async () => {
    try {
      await env.browser?.close();
    } finally {
      await env.server?.stop();
    }
  }, { timeout: HOOK_TIMEOUT_MS });
  return env;
}
