'use strict';
// The browser demo at `/` in a real headless Chromium (Debian's `chromium`,
// driven by playwright-core: nothing is downloaded at run time). It proves
// what a person would see: the chat answer grows while it streams, Stop
// stops it and the server stops generating, the passages and clickable
// citations of a RAG answer appear, and a task's progress bar reaches 100%.
// A screenshot is saved under $CI_ARTIFACTS (or the repository's target/).

const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { after, before, test } = require('node:test');

const { chromium } = require('playwright-core');
const { startServer } = require('./server');

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const REPO = path.resolve(__dirname, '..', '..', '..', '..');
const haveChromium = fs.existsSync(CHROMIUM);
// CI installs Chromium, so there its absence is a failure, not a skip.
const skip = !haveChromium && !process.env.CI ? `no Chromium at ${CHROMIUM}` : false;

let server;
let context;
let page;
let profile;
const pageErrors = [];

before(async () => {
  if (skip) return;
  // Tokens slow enough that the page visibly grows between two frames.
  server = await startServer({ tokenDelay: '40ms' });
  profile = fs.mkdtempSync(path.join(os.tmpdir(), 'agentstream-chromium-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
    viewport: { width: 1280, height: 1100 },
  });
  page = context.pages()[0] || (await context.newPage());
  page.on('pageerror', (error) => pageErrors.push(String(error)));
  page.on('console', (message) => {
    if (message.type() === 'error') pageErrors.push(message.text());
  });
  const response = await page.goto(`http://${server.httpAddr}/`);
  assert.equal(response.status(), 200);
});

after(async () => {
  if (page) {
    const dir = process.env.CI_ARTIFACTS || path.join(REPO, 'target');
    fs.mkdirSync(dir, { recursive: true });
    await page.screenshot({ path: path.join(dir, 'browser-demo.png'), fullPage: true });
  }
  await context?.close();
  if (profile) fs.rmSync(profile, { recursive: true, force: true });
  if (server) assert.equal(await server.stop(), 0, `server exit code; log:\n${server.log.slice(-20).join('\n')}`);
});

const idle = (m) => m.agentstream_active_streams === 0 && m.agentstream_live_generations === 0;

test('the page loads its assets and lists the models', { skip }, async () => {
  assert.equal(await page.title(), 'agentstream demo');
  await page.waitForFunction(() => [...document.querySelectorAll('#chat-model option')].some((o) => o.value === 'synthetic'));
  assert.deepEqual(pageErrors, []);
});

test('the chat answer grows while it streams and Stop stops the generation', { skip }, async () => {
  await server.waitForMetrics(idle, 'no open stream');
  // Record every length the answer takes, as the page renders it.
  await page.evaluate(() => {
    window.answerLengths = [];
    new MutationObserver(() => {
      const answers = document.querySelectorAll('#chat-log .msg.assistant .text');
      const last = answers[answers.length - 1];
      if (last) window.answerLengths.push(last.textContent.length);
    }).observe(document.getElementById('chat-log'), { childList: true, subtree: true, characterData: true });
  });
  await page.selectOption('#chat-model', 'synthetic');
  await page.fill('#chat-max-tokens', '100000');
  await page.fill('#chat-input', 'go');
  await page.click('#chat-send');

  await page.waitForFunction(() => new Set(window.answerLengths.filter((n) => n > 0)).size >= 5);
  const lengths = await page.evaluate(() => window.answerLengths);
  assert.ok(lengths.every((n, i) => i === 0 || n >= lengths[i - 1]), `the answer only grows: ${lengths}`);
  const open = await server.metrics();
  assert.equal(open.agentstream_live_generations, 1);
  assert.ok(await page.isEnabled('#chat-stop'));

  await page.click('#chat-stop');
  await page.waitForSelector('#chat-log .msg.assistant.stopped');
  const stopped = await server.waitForMetrics(idle, 'the generation to stop after Stop');
  // Nothing generates any more: a later full answer adds exactly its own tokens.
  const length = await page.evaluate(() => document.querySelector('#chat-log .msg.assistant .text').textContent.length);
  assert.ok(length > 0);
  await page.selectOption('#chat-model', 'echo');
  await page.fill('#chat-input', 'hello from Chromium');
  await page.click('#chat-send');
  await page.waitForFunction(() => /finish: stop/.test(document.getElementById('chat-status').textContent));
  const status = await page.textContent('#chat-status');
  const completion = Number(/(\d+) completion tokens/.exec(status)[1]);
  assert.equal((await server.metrics()).agentstream_tokens_generated_total, stopped.agentstream_tokens_generated_total + completion);
  assert.match(await page.textContent('#chat-log .msg.assistant:last-child .text'), /hello from Chromium/);
  assert.equal(
    await page.evaluate(() => document.querySelector('#chat-log .msg.assistant .text').textContent.length),
    length,
    'the stopped answer did not grow after Stop',
  );
});

test('after indexing, a RAG answer shows passages with scores and citations that highlight them', { skip }, async () => {
  await page.click('#rag-ingest');
  await page.waitForFunction(() => /^[1-9]\d* documents? indexed/.test(document.getElementById('rag-docs').textContent));
  await page.fill('#rag-input', 'How does cancellation stop the generation?');
  await page.click('#rag-ask');
  await page.waitForFunction(() => /^Done/.test(document.getElementById('rag-status').textContent));

  const passages = await page.$$eval('#rag-passages li', (items) => items.map((li) => ({
    id: li.id,
    title: li.querySelector('.title').textContent,
    score: li.querySelector('.score').textContent,
  })));
  assert.ok(passages.length >= 1);
  assert.ok(passages.every((p, i) => p.id === `passage-${i + 1}` && /^score \d+\.\d{3}$/.test(p.score)));
  assert.equal(passages[0].title, 'Cancellation');

  const citations = await page.$$eval('#rag-answer a.cite', (links) => links.map((a) => a.getAttribute('href')));
  assert.ok(citations.length >= 1, 'the answer cites at least one passage');
  await page.click('#rag-answer a.cite >> nth=0');
  const target = citations[0].slice(1);
  await page.waitForFunction((id) => document.getElementById(id).classList.contains('highlight')
    && document.activeElement.id === id, target);
  assert.deepEqual(pageErrors, []);
});

test('a demo task fills the progress bar to 100% from its event stream', { skip }, async () => {
  await page.fill('#task-steps', '8');
  await page.fill('#task-delay', '60');
  await page.click('#task-start');
  await page.waitForFunction(() => /stream ended/.test(document.getElementById('task-status').textContent));
  assert.equal(await page.$eval('#task-progress', (p) => p.value), 100);
  assert.equal(await page.textContent('#task-percent'), '100%');
  assert.match(await page.textContent('#task-status'), /succeeded/);
  const events = await page.$$eval('#task-events li', (items) => items.map((li) => li.textContent));
  assert.ok(events.length >= 9, events.join('\n')); // running steps, then succeeded
  assert.deepEqual(pageErrors, []);
});

test('the page can hold a WebSocket chat: chunks of two completions, and a cancel that stops one', { skip }, async () => {
  await server.waitForMetrics(idle, 'no open stream');
  const result = await page.evaluate(() => new Promise((resolve, reject) => {
    const socket = new WebSocket(`ws://${location.host}/v1/chat/ws`);
    const texts = { short: '', long: '' };
    const done = {};
    let longChunks = 0;
    socket.onerror = () => reject(new Error('WebSocket error'));
    socket.onopen = () => {
      const ask = (id, request) => socket.send(JSON.stringify({ type: 'chat', id, request }));
      ask('long', { model: 'synthetic', max_tokens: 100000, messages: [{ role: 'user', content: 'go' }] });
      ask('short', { model: 'echo', messages: [{ role: 'user', content: 'over a WebSocket' }] });
    };
    socket.onmessage = (e) => {
      const message = JSON.parse(e.data);
      if (message.type === 'chunk') {
        texts[message.id] += message.chunk.choices[0]?.delta?.content ?? '';
        if (message.id === 'long' && ++longChunks === 5) socket.send(JSON.stringify({ type: 'cancel', id: 'long' }));
      } else if (message.type === 'done') {
        done[message.id] = message;
        if (done.long && done.short) {
          socket.close();
          resolve({ texts, done });
        }
      } else {
        reject(new Error(e.data));
      }
    };
  }));
  assert.match(result.texts.short, /over a WebSocket/);
  assert.equal(result.done.long.cancelled, true);
  assert.ok(!result.done.short.cancelled);
  assert.ok(result.texts.long.length > 0);
  await server.waitForMetrics(idle, 'the cancelled completion to stop');
});
