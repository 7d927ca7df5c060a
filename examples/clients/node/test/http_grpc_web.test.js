'use strict';
// gRPC-Web through the HTTP port, with Connect's gRPC-Web transport for Node
// (HTTP/1.1, as browsers use it). No generated code: the descriptors are the
// ones @grpc/proto-loader reads from proto/ at run time, loaded into a
// @bufbuild/protobuf registry.

const assert = require('node:assert/strict');
const { after, before, test } = require('node:test');

const { create, createFileRegistry, fromBinary } = require('@bufbuild/protobuf');
const { FileDescriptorProtoSchema, FileDescriptorSetSchema } = require('@bufbuild/protobuf/wkt');
const { Code, ConnectError, createClient } = require('@connectrpc/connect');
const { createGrpcWebTransport } = require('@connectrpc/connect-node');

const { collect, connect } = require('../agentstream');
const { startServer } = require('./server');
const protoLoader = require('@grpc/proto-loader');
const { PROTO_ROOT } = require('../agentstream');

/** Every file descriptor proto-loader parsed, as one registry. */
function registry() {
  const definition = protoLoader.loadSync(
    ['agentstream/v1/chat.proto', 'agentstream/v1/rag.proto', 'agentstream/v1/task.proto'],
    { includeDirs: [PROTO_ROOT] },
  );
  const files = new Map();
  for (const entry of Object.values(definition)) {
    for (const bytes of entry.fileDescriptorProtos || []) {
      const file = fromBinary(FileDescriptorProtoSchema, bytes);
      files.set(file.name, file);
    }
  }
  return createFileRegistry(create(FileDescriptorSetSchema, { file: [...files.values()] }));
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
