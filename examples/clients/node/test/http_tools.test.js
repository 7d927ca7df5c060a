'use strict';
// Tool calls through the official `openai` Node package against agentstream's
// HTTP port and its built-in `tools` model: the SDK's stream helper
// assembles and parses a call from its streamed fragments, and its
// `runTools` helper runs the whole agent loop (call, result, answer).

const assert = require('node:assert/strict');
const { after, before, test } = require('node:test');

const OpenAI = require('openai');
const { startServer } = require('./server');

let server;
let openai;

before(async () => {
  server = await startServer();
  openai = new OpenAI({ baseURL: `http://${server.httpAddr}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 30_000 });
});

after(async () => {
  if (server) assert.equal(await server.stop(), 0, `server exit code; log:\n${server.log.slice(-20).join('\n')}`);
});

const weatherParameters = {
  type: 'object',
  properties: { city: { type: 'string' } },
  required: ['city'],
  additionalProperties: false,
};
const getWeather = ({ city }) => JSON.stringify({ city, temperature_c: 18, sky: 'sunny' });

test('the stream helper assembles and parses a tool call from its fragments', async () => {
  const question = 'What is the weather in Zürich?';
  const fragments = [];
  const done = [];
  const stream = openai.chat.completions
    .stream({
      model: 'tools',
      messages: [{ role: 'user', content: question }],
      tools: [{ type: 'function', function: { name: 'get_weather', parameters: weatherParameters, strict: true } }],
    })
    .on('tool_calls.function.arguments.delta', (event) => fragments.push(event.arguments_delta))
    .on('tool_calls.function.arguments.done', (event) => done.push(event));
  const completion = await stream.finalChatCompletion();

  assert.ok(fragments.length > 3, `the arguments arrive in pieces: ${fragments.length}`);
  assert.equal(done.length, 1);
  assert.equal(done[0].name, 'get_weather');
  assert.deepEqual(done[0].parsed_arguments, { city: question });
  assert.equal(fragments.join(''), done[0].arguments);
  const [choice] = completion.choices;
  assert.equal(choice.finish_reason, 'tool_calls');
  assert.equal(choice.message.content, null);
  assert.match(choice.message.tool_calls[0].id, /^call_/);
});

test('runTools runs the agent loop to the streamed answer', async () => {
  const results = [];
  const runner = openai.chat.completions
    .runTools({
      model: 'tools',
      messages: [{ role: 'user', content: 'Weather in Paris?' }],
      tools: [
        {
          type: 'function',
          function: { name: 'get_weather', function: getWeather, parse: JSON.parse, parameters: weatherParameters },
        },
      ],
      stream: true,
    })
    .on('functionToolCallResult', (result) => results.push(result));
  let streamed = '';
  runner.on('content', (delta) => {
    streamed += delta;
  });
  const answer = await runner.finalContent();

  assert.deepEqual(results, [getWeather({ city: 'Weather in Paris?' })]);
  assert.match(answer, /^From the tool results: get_weather returned/);
  assert.ok(answer.includes('"temperature_c": 18') || answer.includes('"temperature_c":18'), answer);
  assert.equal(streamed, answer);
});
