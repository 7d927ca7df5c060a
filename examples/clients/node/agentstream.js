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

const DEFAULT_PORT = 50051;

/**
 * The gRPC target and credentials of a server address, written as for the
 * agentstream CLI: HOST:PORT or http://HOST:PORT for plaintext (a bare HOST
 * means port 50051), https://HOST:PORT for TLS with the system's roots.
 */
function parseServer(address) {
  const match = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\/(.*)$/.exec(address);
  const scheme = match ? match[1].toLowerCase() : 'http';
  let target = (match ? match[2] : address).replace(/\/+$/, '');
  if (!target) throw new Error(`--server '${address}' names no host; use HOST:PORT or http://HOST:PORT`);
  if (!/:\d+$/.test(target) || target.endsWith(']')) target = `${target}:${DEFAULT_PORT}`;
  if (scheme === 'http') return { target, credentials: grpc.credentials.createInsecure() };
  if (scheme === 'https') return { target, credentials: grpc.credentials.createSsl() };
  throw new Error(`--server '${address}': unsupported scheme ${scheme}://; use HOST:PORT, http:// or https://`);
}

/** Connects to a server address (see parseServer). */
function connect(address, options = {}) {
  const { target, credentials } = parseServer(address);
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

module.exports = { connect, parseServer, deadlineIn, collect, unary, grpc, v1, TERMINAL, PROTO_ROOT };
