'use strict';
// gRPC-Web through the HTTP port, with Connect's gRPC-Web transport for Node
// (HTTP/1.1, as browsers use it). No generated code: `buf build` (the pinned
// npm package) compiles proto/ into a descriptor set, which is loaded into a
// @bufbuild/protobuf registry at run time.

const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const path = require('node:path');
const { after, before, test } = require('node:test');

const { createFileRegistry, fromBinary } = require('@bufbuild/protobuf');
const { FileDescriptorSetSchema } = require('@bufbuild/protobuf/wkt');
const { Code, ConnectError, createClient } = require('@connectrpc/connect');
const { createGrpcWebTransport } = require('@connectrpc/connect-node');

const { collect, connect, PROTO_ROOT } = require('../agentstream');
const { startServer } = require('./server');

/** The API's descriptors, imports included, as one registry. */
function registry() {
  const buf = path.join(__dirname, '..', 'node_modules', '.bin', 'buf');
  const bytes = execFileSync(buf, ['build', '--as-file-descriptor-set', '-o', '-'], {
    cwd: path.dirname(PROTO_ROOT), // the repository: buf.yaml names proto/
    maxBuffer: 16 << 20,
  });
  return createFileRegistry(fromBinary(FileDescriptorSetSchema, bytes));
}

const types = registry();
const ROLE_USER = types.getEnum('agentstream.v1.Role').values.find((v) => v.name === 'ROLE_USER').number;
const idle = (m) => m.agentstream_active_streams === 0 && m.agentstream_live_generations === 0;

let server;
let chat;
let tasks;
let grpcClient;

before(async () => {
  server = await startServer();
  const transport = createGrpcWebTransport({ baseUrl: `http://${server.httpAddr}`, httpVersion: '1.1' });
  chat = createClient(types.getService('agentstream.v1.ChatService'), transport);
  tasks = createClient(types.getService('agentstream.v1.TaskService'), transport);
  grpcClient = connect(server.addr);
});

after(async () => {
  grpcClient?.close();
  if (server) assert.equal(await server.stop(), 0, `server exit code; log:\n${server.log.slice(-20).join('\n')}`);
});

test('StreamChat streams over gRPC-Web the same chunks as over gRPC', async () => {
  const request = { messages: [{ role: ROLE_USER, content: '你好, gRPC-Web' }], model: 'echo', n: 2, includeUsage: true };
  const chunks = [];
  for await (const chunk of chat.streamChat(request)) chunks.push(chunk);

  const usage = chunks.at(-1).usage;
  assert.ok(usage.completionTokens > 0 && usage.promptTokens > 0);
  const texts = {};
  for (const choice of chunks.flatMap((c) => c.choices)) texts[choice.index] = (texts[choice.index] || '') + choice.delta.content;

  const overGrpc = await collect(
    grpcClient.chat.StreamChat({ messages: [{ role: 'ROLE_USER', content: '你好, gRPC-Web' }], model: 'echo', n: 2 }),
  );
  const expected = {};
  for (const choice of overGrpc.flatMap((c) => c.choices)) expected[choice.index] = (expected[choice.index] || '') + choice.delta.content;
  assert.deepEqual(texts, expected);
  assert.ok(texts[0].includes('你好, gRPC-Web'));
});

test('a bad request is INVALID_ARGUMENT over gRPC-Web', async () => {
  await assert.rejects(
    (async () => {
      for await (const chunk of chat.streamChat({ messages: [], n: 99 })) assert.fail(`unexpected chunk ${chunk}`);
    })(),
    (error) => error instanceof ConnectError && error.code === Code.InvalidArgument,
  );
});

test('aborting a gRPC-Web stream stops the generation', async () => {
  await server.waitForMetrics(idle, 'no open stream');
  const abort = new AbortController();
  let received = 0;
  await assert.rejects(
    (async () => {
      const request = { messages: [{ role: ROLE_USER, content: 'go' }], model: 'synthetic', maxTokens: 200_000 };
      for await (const chunk of chat.streamChat(request, { signal: abort.signal })) {
        assert.equal(chunk.model, 'synthetic');
        received += 1;
        if (received === 3) abort.abort();
      }
    })(),
    (error) => ConnectError.from(error).code === Code.Canceled,
  );
  await server.waitForMetrics(idle, 'the generation to stop after the abort');
});

test('StartTask and WatchTask over gRPC-Web follow a task to its end', async () => {
  const { task } = await tasks.startTask({ spec: { case: 'demo', value: { steps: 4, stepDelayMs: 5 } } });
  const states = [];
  for await (const { event } of tasks.watchTask({ taskId: task.taskId })) states.push(event.state);
  const names = types.getEnum('agentstream.v1.TaskState');
  assert.equal(names.value[states.at(-1)].name, 'TASK_STATE_SUCCEEDED');
  assert.ok(states.length >= 2);
});
