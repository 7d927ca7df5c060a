#!/usr/bin/env node
'use strict';
// agentstream from Node: stream a chat answer, a RAG answer, task progress.
//
//   node client.js chat "什么是异步编程？" [--usage] [--model synthetic] [--max-tokens 40]
//   node client.js ask "When does the client see the first token?" [--top-k 3]
//   node client.js watch [TASK_ID] [--after N] [--steps 10] [--delay-ms 200]
//
// --server HOST:PORT (or AGENTSTREAM_SERVER; default 127.0.0.1:50051).
// Ctrl-C cancels the call, which stops the work on the server at once.

const { parseArgs } = require('node:util');
const { connect, unary, grpc } = require('./agentstream');

function streamChat(client, question, { model = '', maxTokens = 0, usage = false } = {}) {
  return client.chat.StreamChat({
    messages: [{ role: 'ROLE_USER', content: question }],
    model,
    max_tokens: maxTokens,
    include_usage: usage,
  });
}

function print(call, onData) {
  process.once('SIGINT', () => call.cancel());
  return new Promise((resolve, reject) => {
    call.on('data', onData);
    call.on('error', reject);
    call.on('end', resolve);
  });
}

async function chat(client, question, values) {
  const call = streamChat(client, question, {
    model: values.model,
    maxTokens: Number(values['max-tokens']),
    usage: values.usage,
  });
  await print(call, (chunk) => {
    for (const choice of chunk.choices) {
      process.stdout.write(choice.delta.content);
      if (choice.finish_reason !== 'FINISH_REASON_UNSPECIFIED') {
        console.error(`\n(finish: ${choice.finish_reason})`);
      }
    }
    if (chunk.usage) {
      const u = chunk.usage;
      console.error(`(usage: prompt ${u.prompt_tokens}, completion ${u.completion_tokens}, total ${u.total_tokens})`);
    }
  });
}

async function ask(client, question, values) {
  const call = client.rag.StreamAnswer({ question, top_k: Number(values['top-k']) });
  await print(call, (response) => {
    switch (response.event) {
      case 'retrieval_started':
        console.error(`(retrieving ${response.retrieval_started.top_k} passages)`);
        break;
      case 'passages_retrieved': {
        const { passages, retrieval_ms: ms } = response.passages_retrieved;
        console.error(`(found ${passages.length} passages in ${ms} ms)`);
        passages.forEach((p, i) => console.error(`  [${i + 1}] ${p.title || p.document_id} (score ${p.score.toFixed(2)})`));
        break;
      }
      case 'generation_started':
        console.error(`(answering with ${response.generation_started.model})`);
        break;
      case 'content':
        process.stdout.write(response.content.text);
        break;
      case 'done':
        console.error(`\n(finish: ${response.done.finish_reason}, ${response.done.usage.completion_tokens} tokens)`);
        break;
      default:
        break;
    }
  });
}

async function watch(client, taskId, values) {
  if (!taskId) {
    const spec = { steps: Number(values.steps), step_delay_ms: Number(values['delay-ms']) };
    ({ task: { task_id: taskId } } = await unary(client.tasks, 'StartTask', { demo: spec }));
    console.error(`started ${taskId}`);
  }
  let last;
  const call = client.tasks.WatchTask({ task_id: taskId, after_sequence: values.after });
  await print(call, ({ event }) => {
    const state = event.state.replace('TASK_STATE_', '');
    console.log(`${event.sequence.padStart(6)} ${state.padEnd(10)} ${event.step}/${event.total_steps} ${event.percent.toFixed(1).padStart(5)}% ${event.message}`);
    last = event;
  });
  if (!last || last.state !== 'TASK_STATE_SUCCEEDED') process.exitCode = 1;
}

async function main() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      server: { type: 'string', default: process.env.AGENTSTREAM_SERVER || '127.0.0.1:50051' },
      model: { type: 'string', default: '' },
      'max-tokens': { type: 'string', default: '0' },
      usage: { type: 'boolean', default: false },
      'top-k': { type: 'string', default: '0' },
      after: { type: 'string', default: '0' },
      steps: { type: 'string', default: '10' },
      'delay-ms': { type: 'string', default: '200' },
    },
  });
  const [command, argument] = positionals;
  const commands = { chat, ask, watch };
  if (!commands[command] || (command !== 'watch' && !argument)) {
    console.error('usage: node client.js chat|ask QUESTION | watch [TASK_ID]   (see the top of client.js)');
    process.exitCode = 2;
    return;
  }
  const client = connect(values.server);
  try {
    await commands[command](client, argument, values);
  } catch (error) {
    if (error.code === grpc.status.CANCELLED) {
      console.error('\ncancelled');
      process.exitCode = 130;
    } else {
      console.error(`\nerror: ${grpc.status[error.code]}: ${error.details}`);
      process.exitCode = 1;
    }
  } finally {
    client.close();
  }
}

if (require.main === module) main();

module.exports = { streamChat };
