'use strict';
// The official `openai` Node package against agentstream's HTTP port:
// baseURL points at /v1, so the SDK's own request building, SSE parsing and
// error classes are under test. Deterministic built-in models let the text
// be compared with the same request over gRPC (one core, two protocols).

const assert = require('node:assert/strict');
const { after, before, test } = require('node:test');

const OpenAI = require('openai');
const { connect, collect, deadlineIn } = require('../agentstream');
const { startServer } = require('./server');

let server;
let grpcClient;
let openai;

before(async () => {
  server = await startServer();
  grpcClient = connect(server.addr);
  openai = new OpenAI({ baseURL: `http://${server.httpAddr}/v1`, apiKey: 'unused-without-keys', maxRetries: 0, timeout: 30_000 });
});

after(async () => {
  grpcClient?.close();
  if (server) assert.equal(await server.stop(), 0, `server exit code; log:\n${server.log.slice(-20).join('\n')}`);
});

const user = (content) => [{ role: 'user', content }];
const idle = (m) => m.agentstream_active_streams === 0 && m.agentstream_live_generations === 0;

/** The text of each choice of the same request over gRPC. */
async function grpcTexts(content, fields) {
  const chunks = await collect(
    grpcClient.chat.StreamChat({ messages: [{ role: 'ROLE_USER', content }], ...fields }, { deadline: deadlineIn(30_000) }),
  );
  const texts = {};
  for (const choice of chunks.flatMap((c) => c.choices)) texts[choice.index] = (texts[choice.index] || '') + choice.delta.content;
  return texts;
}

test('chat.completions.create streams chunks carrying the gRPC text, n choices and usage', async () => {
  const question = '什么是异步编程？ streams';
  const stream = await openai.chat.completions.create({
    model: 'echo',
    messages: user(question),
    n: 2,
    stream: true,
    stream_options: { include_usage: true },
  });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);

  assert.ok(chunks.every((c) => c.object === 'chat.completion.chunk'));
  assert.equal(new Set(chunks.map((c) => c.id)).size, 1);
  const usageChunk = chunks.at(-1);
  assert.deepEqual(usageChunk.choices, []);
  assert.equal(usageChunk.usage.total_tokens, usageChunk.usage.prompt_tokens + usageChunk.usage.completion_tokens);

  const texts = {};
  const finish = {};
  for (const choice of chunks.flatMap((c) => c.choices)) {
    texts[choice.index] = (texts[choice.index] || '') + (choice.delta.content || '');
    if (choice.finish_reason) finish[choice.index] = choice.finish_reason;
  }
  assert.deepEqual(finish, { 0: 'stop', 1: 'stop' });
  assert.ok(texts[0].includes(question));
  assert.deepEqual(texts, await grpcTexts(question, { model: 'echo', n: 2 }));
});

test('aborting the stream stops the generation on the server', async () => {
  await server.waitForMetrics(idle, 'no open stream');
  const stream = await openai.chat.completions.create({
    model: 'synthetic',
    messages: user('go'),
    max_tokens: 200_000,
    stream: true,
  });
  let received = 0;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    received += 1;
    if (received === 3) break; // leaving the loop aborts the request
  }
  await server.waitForMetrics(idle, 'the generation to stop after the abort');
});

test('an unknown model is a NotFoundError, a bad argument a BadRequestError naming it', async () => {
  await assert.rejects(
    openai.chat.completions.create({ model: 'no-such-model', messages: user('hi'), stream: true }),
    (error) => error instanceof OpenAI.NotFoundError && error.status === 404 && error.code === 'model_not_found',
  );
  await assert.rejects(
    openai.chat.completions.create({ model: 'echo', messages: user('hi'), n: 99 }),
    (error) => error instanceof OpenAI.BadRequestError && error.param === 'n' && error.type === 'invalid_request_error',
  );
});
