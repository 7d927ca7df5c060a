'use strict';
// The Node client against the real server: streaming, cancellation, errors,
// task resume and a RAG answer, through @grpc/grpc-js with run-time protos.

const assert = require('node:assert/strict');
const { execFile } = require('node:child_process');
const path = require('node:path');
const { after, before, test } = require('node:test');
const { promisify } = require('node:util');

const { connect, collect, deadlineIn, unary, grpc, TERMINAL } = require('../agentstream');
const { startServer } = require('./server');

let server;
let client;

before(async () => {
  server = await startServer();
  client = connect(server.addr);
});

after(async () => {
  client?.close();
  if (server) assert.equal(await server.stop(), 0, `server exit code; log:\n${server.log.slice(-20).join('\n')}`);
});

const ask = (content, fields = {}) => ({ messages: [{ role: 'ROLE_USER', content }], ...fields });
const endless = () => ask('go', { model: 'synthetic', max_tokens: 200_000 });
const idle = (m) => m.agentstream_active_streams === 0 && m.agentstream_live_generations === 0;

test('StreamChat streams chunks with one id, roles, finish reasons and a final usage chunk', async () => {
  const chunks = await collect(
    client.chat.StreamChat(ask('什么是异步编程？', { n: 2, include_usage: true }), { deadline: deadlineIn(30_000) }),
  );
  assert.equal(new Set(chunks.map((c) => c.id)).size, 1);
  assert.match(chunks[0].id, /^chatcmpl-.+/);
  assert.equal(new Set(chunks.map((c) => c.created)).size, 1);

  const usageChunk = chunks.at(-1);
  assert.deepEqual(usageChunk.choices, []);
  assert.equal(usageChunk.usage.total_tokens, usageChunk.usage.prompt_tokens + usageChunk.usage.completion_tokens);

  for (const index of [0, 1]) {
    const choices = chunks.flatMap((c) => c.choices).filter((c) => c.index === index);
    assert.equal(choices[0].delta.role, 'ROLE_ASSISTANT');
    assert.ok(choices.slice(1).every((c) => c.delta.role === 'ROLE_UNSPECIFIED'));
    assert.ok(choices.slice(0, -1).every((c) => c.finish_reason === 'FINISH_REASON_UNSPECIFIED'));
    assert.equal(choices.at(-1).finish_reason, 'FINISH_REASON_STOP');
    // Chinese arrives whole: the question is restated character for character.
    assert.ok(choices.map((c) => c.delta.content).join('').includes('什么是异步编程？'));
  }
});

test('cancelling a call stops the generation on the server', async () => {
  await server.waitForMetrics(idle, 'no open stream');
  const call = client.chat.StreamChat(endless());
  const ended = new Promise((resolve) => call.on('error', resolve));
  let received = 0;
  await new Promise((resolve) => {
    call.on('data', () => {
      received += 1;
      if (received === 3) resolve();
    });
  });
  const open = await server.metrics();
  assert.equal(open.agentstream_active_streams, 1);
  assert.equal(open.agentstream_live_generations, 1);

  call.cancel();

  assert.equal((await ended).code, grpc.status.CANCELLED);
  const idleAgain = await server.waitForMetrics(idle, 'the cancelled stream to close');
  // A whole later call adds exactly its own tokens: nothing else is generating.
  const measured = await collect(client.chat.StreamChat(ask('count me', { include_usage: true })));
  assert.equal(
    (await server.metrics()).agentstream_tokens_generated_total,
    idleAgain.agentstream_tokens_generated_total + measured.at(-1).usage.completion_tokens,
  );
});

test('a deadline ends the stream with DEADLINE_EXCEEDED', async () => {
  const call = client.chat.StreamChat(endless(), { deadline: deadlineIn(500) });
  let received = 0;
  call.on('data', () => {
    received += 1;
  });
  await assert.rejects(collect(call), (error) => error.code === grpc.status.DEADLINE_EXCEEDED);
  assert.ok(received > 0);
  await server.waitForMetrics(idle, 'the expired stream to close');
});

test('bad arguments are INVALID_ARGUMENT with a google.rpc.BadRequest detail', async () => {
  const error = await collect(client.chat.StreamChat(ask('hi', { n: 99, max_tokens: 999_999_999 }))).then(
    () => assert.fail('the call succeeded'),
    (e) => e,
  );
  assert.equal(error.code, grpc.status.INVALID_ARGUMENT);
  // The message names the first violation and counts the rest (it stays
  // small whatever the request); the detail below names every field.
  assert.match(error.details, /max_tokens/);
  assert.match(error.details, /and 1 more/);
  // The rich status travels in the grpc-status-details-bin trailer: a
  // google.rpc.Status whose Any detail is a BadRequest naming both fields.
  const [details] = error.metadata.get('grpc-status-details-bin');
  assert.ok(Buffer.isBuffer(details));
  const text = details.toString('latin1');
  assert.ok(text.includes('type.googleapis.com/google.rpc.BadRequest'));
  assert.ok(text.includes('max_tokens'));
});

test('an unknown task is NOT_FOUND', async () => {
  await assert.rejects(
    collect(client.tasks.WatchTask({ task_id: 'task-does-not-exist' })),
    (error) => error.code === grpc.status.NOT_FOUND,
  );
});

test('WatchTask resumes after the last sequence seen without missing an event', async () => {
  const { task } = await unary(client.tasks, 'StartTask', { demo: { steps: 6, step_delay_ms: 30 } });
  const first = client.tasks.WatchTask({ task_id: task.task_id });
  const seen = [];
  const left = new Promise((resolve) => first.on('error', resolve));
  await new Promise((resolve) => {
    first.on('data', ({ event }) => {
      seen.push(event);
      if (seen.length === 3) {
        first.cancel();
        resolve();
      }
    });
  });
  assert.equal((await left).code, grpc.status.CANCELLED);

  const rest = await collect(client.tasks.WatchTask({ task_id: task.task_id, after_sequence: seen.at(-1).sequence }));
  const events = [...seen.slice(0, 3), ...rest.map((r) => r.event)];
  assert.deepEqual(events.map((e) => Number(e.sequence)), events.map((_, i) => i + 1));
  assert.equal(events[0].state, 'TASK_STATE_PENDING');
  assert.equal(events.at(-1).state, 'TASK_STATE_SUCCEEDED');
  assert.equal(events.filter((e) => TERMINAL.has(e.state)).length, 1);
  assert.ok(Number(events.at(-1).time.seconds) > 0);
});

test('StreamAnswer streams retrieval, passages, generation, content and done', async () => {
  const documents = [{ id: 'node-doc', title: 'Node', text: 'The Node client loads the proto files at run time with proto-loader.' }];
  const { task } = await unary(client.rag, 'IngestDocuments', { documents });
  const watched = await collect(client.tasks.WatchTask({ task_id: task.task_id }));
  assert.equal(watched.at(-1).event.state, 'TASK_STATE_SUCCEEDED');

  const responses = await collect(client.rag.StreamAnswer({ question: 'How does the Node client load proto files?' }));
  assert.deepEqual(responses.map((r) => Number(r.sequence)), responses.map((_, i) => i + 1));
  const kinds = responses.map((r) => r.event);
  assert.deepEqual(kinds.slice(0, 3), ['retrieval_started', 'passages_retrieved', 'generation_started']);
  assert.equal(kinds.at(-1), 'done');
  assert.ok(kinds.slice(3, -1).every((k) => k === 'content'));
  assert.equal(responses[1].passages_retrieved.passages[0].document_id, 'node-doc');
  assert.match(responses.filter((r) => r.event === 'content').map((r) => r.content.text).join(''), /\[1\]/);
});

test('client.js streams a chat answer', async () => {
  const { stdout, stderr } = await promisify(execFile)(
    process.execPath,
    [path.join(__dirname, '..', 'client.js'), '--server', server.addr, 'chat', '你好，世界', '--usage'],
    { timeout: 30_000 },
  );
  assert.ok(stdout.includes('你好，世界'));
  assert.match(stderr, /FINISH_REASON_STOP/);
  assert.match(stderr, /usage: prompt \d+/);
});

test('client.js --help prints the usage and exits 0; a bad option exits 2 with it', async () => {
  const script = path.join(__dirname, '..', 'client.js');
  const help = await promisify(execFile)(process.execPath, [script, '--help'], { timeout: 30_000 });
  assert.match(help.stdout, /^usage: node client\.js COMMAND/);
  assert.match(help.stdout, /--server ADDRESS/);
  await assert.rejects(
    promisify(execFile)(process.execPath, [script, '--bogus'], { timeout: 30_000 }),
    (error) => error.code === 2 && /Unknown option '--bogus'/.test(error.stderr) && /usage:/.test(error.stderr),
  );
});

test('client.js takes --server after the command, with http://, and hints when nothing listens', async () => {
  const script = path.join(__dirname, '..', 'client.js');
  const { stdout } = await promisify(execFile)(
    process.execPath,
    [script, 'chat', '你好', '--server', `http://${server.addr}`],
    { timeout: 30_000 },
  );
  assert.ok(stdout.includes('你好'));
  const probe = require('node:net').createServer();
  await new Promise((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const closed = `127.0.0.1:${probe.address().port}`;
  await new Promise((resolve) => probe.close(resolve));
  await assert.rejects(
    promisify(execFile)(process.execPath, [script, 'chat', 'hi', '--server', closed], { timeout: 30_000 }),
    (error) => error.code === 1 && /is the server running\? agentstream serve/.test(error.stderr),
  );
});
