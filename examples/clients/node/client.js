#!/usr/bin/env node
'use strict';
// agentstream from Node: stream a chat answer, a RAG answer, task progress.
//
//   node client.js chat "什么是异步编程？" [--usage] [--model synthetic] [--max-tokens 40]
//   node client.js ask "When does the client see the first token?" [--top-k 3]
//   node client.js watch [TASK_ID] [--after N] [--steps 10] [--delay-ms 200]
//
// --server HOST:PORT, http://HOST:PORT or https://HOST:PORT (or
// AGENTSTREAM_SERVER; default 127.0.0.1:50051), anywhere on the line.
// `node client.js --help` lists the commands and options.
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

const USAGE = `usage: node client.js COMMAND [options]

commands:
  chat QUESTION        stream a chat answer   [--model M] [--max-tokens N] [--usage]
  ask QUESTION         stream a RAG answer with its events   [--top-k K]
  watch [TASK_ID]      follow a task; with no id, start a demo task first
                       [--after SEQ] [--steps N] [--delay-ms MS]

options:
  --server ADDRESS     HOST:PORT, http://HOST:PORT or https://HOST:PORT
                       (default: AGENTSTREAM_SERVER or 127.0.0.1:50051)
  -h, --help           show this help

Ctrl-C cancels the call: the server stops its work at once.`;

function usageError(message) {
  console.error(`error: ${message}\n\n${USAGE}`);
  process.exitCode = 2;
}

async function main() {
  let parsed;
  try {
    parsed = parseArgs({
      allowPositionals: true,
      options: {
        help: { type: 'boolean', short: 'h', default: false },
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
  } catch (error) {
    usageError(error.message);
    return;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    console.log(USAGE);
    return;
  }
  const [command, argument] = positionals;
  const commands = { chat, ask, watch };
  if (!commands[command]) {
    usageError(command ? `unknown command '${command}'` : 'a command is required');
    return;
  }
  if (command !== 'watch' && !argument) {
    usageError(`${command} needs a QUESTION`);
    return;
  }
  let client;
  try {
    client = connect(values.server);
  } catch (error) {
    usageError(error.message);
    return;
  }
  try {
    await commands[command](client, argument, values);
  } catch (error) {
    if (error.code === grpc.status.CANCELLED) {
      console.error('\ncancelled');
      process.exitCode = 130;
    } else if (error.code !== undefined) {
      const hint = error.code === grpc.status.UNAVAILABLE && /connect/i.test(error.details)
        ? ' (is the server running? agentstream serve)' : '';
      console.error(`\nerror: ${grpc.status[error.code]}: ${error.details}${hint}`);
      process.exitCode = 1;
    } else {
      console.error(`\nerror: ${error.message}`);
      process.exitCode = 1;
    }
  } finally {
    client.close();
  }
}

if (require.main === module) main();

module.exports = { streamChat };
