'use strict';
// agentstream clients for Node, from the repository's .proto files loaded at
// run time by @grpc/proto-loader: no generated code.
//
//   const { connect } = require('./agentstream');
//   const { chat, rag, tasks, close } = connect('127.0.0.1:50051');
//
// Messages are plain objects with the proto field names (snake_case), enums
// as their names ('ROLE_USER'), 64-bit integers as strings, and every field
// present with its default, so `chunk.usage` is null unless set.

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_ROOT = path.resolve(__dirname, '..', '..', '..', 'proto');
const PROTO_FILES = [
  'agentstream/v1/chat.proto',
  'agentstream/v1/rag.proto',
  'agentstream/v1/task.proto',
];

const definition = protoLoader.loadSync(PROTO_FILES, {
  includeDirs: [PROTO_ROOT], // google/protobuf/*.proto come with protobufjs
  keepCase: true,
  enums: String,
  longs: String,
  defaults: true,
  oneofs: true, // a oneof's set member is named by a virtual field: response.event === 'content'
});
const v1 = grpc.loadPackageDefinition(definition).agentstream.v1;

/** Connects to a server given as HOST:PORT (an http:// prefix is accepted). */
function connect(address, options = {}) {
  const target = address.replace(/^http:\/\//, '');
  const credentials = grpc.credentials.createInsecure();
  const chat = new v1.ChatService(target, credentials, options);
  // One channel for all three services.
  const channelOverride = chat.getChannel();
  const rag = new v1.RagService(target, credentials, { ...options, channelOverride });
  const tasks = new v1.TaskService(target, credentials, { ...options, channelOverride });
  return { chat, rag, tasks, close: () => chat.close() };
}

/** A deadline `ms` milliseconds from now, for the `deadline` call option. */
function deadlineIn(ms) {
  return new Date(Date.now() + ms);
}

/** Collects a server stream into an array; rejects with the call's error. */
function collect(call) {
  return new Promise((resolve, reject) => {
    const messages = [];
    call.on('data', (message) => messages.push(message));
    call.on('error', reject);
    call.on('end', () => resolve(messages));
  });
}

/** Promise form of a unary call: `await unary(tasks, 'StartTask', request)`. */
function unary(client, method, request, options = {}) {
  return new Promise((resolve, reject) => {
    client[method](request, options, (error, response) => (error ? reject(error) : resolve(response)));
  });
}

const TERMINAL = new Set(['TASK_STATE_SUCCEEDED', 'TASK_STATE_FAILED', 'TASK_STATE_CANCELLED']);

module.exports = { connect, deadlineIn, collect, unary, grpc, v1, TERMINAL, PROTO_ROOT };
