// agentstream browser demo: plain JavaScript, no build step, no dependency.
//
// Three streams of the HTTP API, each the way a browser app would use it:
// - chat: fetch() POST /v1/chat/completions with stream:true, the SSE body
//   read as it arrives; Stop aborts the fetch, which closes the connection,
//   which makes the server drop the generation (no further token).
// - RAG: fetch() POST /v1/rag/answer (SSE): passages with scores, then the
//   answer, whose [n] citations link to the passages.
// - tasks: POST /v1/tasks, then EventSource on /v1/tasks/{id}/events (it
//   resumes by itself with Last-Event-ID) until the server's `end` event.
// When an API key is set, every request carries `authorization: Bearer`;
// EventSource cannot send headers, so task events are then read with
// fetch() instead, resuming with Last-Event-ID the same way.
'use strict';

const $ = (id) => document.getElementById(id);

// ---- API key --------------------------------------------------------------

const KEY_STORAGE = 'agentstream.apiKey';
let apiKey = sessionStorage.getItem(KEY_STORAGE) || '';

function headers(extra = {}) {
  const all = { ...extra };
  if (apiKey) all.authorization = `Bearer ${apiKey}`;
  return all;
}

function showKeyStatus() {
  $('key-status').textContent = apiKey ? 'A key is set for this tab.' : 'No key: requests are sent without authorization.';
}

$('key-form').addEventListener('submit', (e) => {
  e.preventDefault();
  apiKey = $('api-key').value.trim();
  if (apiKey) sessionStorage.setItem(KEY_STORAGE, apiKey);
  else sessionStorage.removeItem(KEY_STORAGE);
  $('api-key').value = '';
  showKeyStatus();
  loadModels();
});

$('key-clear').addEventListener('click', () => {
  apiKey = '';
  sessionStorage.removeItem(KEY_STORAGE);
  $('api-key').value = '';
  showKeyStatus();
});

// ---- HTTP helpers ---------------------------------------------------------

/** An error from the server, with its OpenAI-style message when it sent one. */
class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

async function errorOf(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) message = `${response.status}: ${body.error.message}`;
  } catch {
    // not JSON: keep the status line
  }
  if (response.status === 401) {
    $('auth').open = true;
    message += ' (set an API key above)';
  }
  return new ApiError(message, response.status);
}

async function postJson(path, body, { signal, accept = 'application/json' } = {}) {
  const response = await fetch(path, {
    method: 'POST',
    headers: headers({ 'content-type': 'application/json', accept }),
    body: JSON.stringify(body),
    signal,
  });
  if (!response.ok) throw await errorOf(response);
  return response;
}

/** The value of a proto3-JSON field, under its JSON name or its proto name. */
function field(object, camel, snake) {
  if (!object) return undefined;
  return object[camel] !== undefined ? object[camel] : object[snake];
}

/**
 * Server-Sent Events of a fetch() response, as {type, data, id} objects, in
 * the browser's EventSource parsing rules (comments skipped, multi-line data
 * joined, `id:` remembered). Ends when the body ends; an aborted fetch
 * rejects with an AbortError.
 */
async function* sseEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let type = '';
  let data = [];
  let id = null;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let newline;
      while ((newline = buffer.indexOf('\n')) >= 0) {
        let line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        if (line.endsWith('\r')) line = line.slice(0, -1);
        if (line === '') {
          if (data.length) yield { type: type || 'message', data: data.join('\n'), id };
          type = '';
          data = [];
          continue;
        }
        if (line.startsWith(':')) continue; // a comment, e.g. ": keep-alive"
        const colon = line.indexOf(':');
        const name = colon < 0 ? line : line.slice(0, colon);
        let text = colon < 0 ? '' : line.slice(colon + 1);
        if (text.startsWith(' ')) text = text.slice(1);
        if (name === 'data') data.push(text);
        else if (name === 'event') type = text;
        else if (name === 'id') id = text;
      }
    }
  } finally {
    reader.releaseLock();
  }
}

function setStatus(id, text, isError = false) {
  const element = $(id);
  element.textContent = text;
  element.classList.toggle('error', isError);
}

// ---- models ---------------------------------------------------------------

async function loadModels() {
  try {
    const response = await fetch('/v1/models', { headers: headers() });
    if (!response.ok) throw await errorOf(response);
    const list = await response.json();
    const select = $('chat-model');
    const chosen = select.value;
    select.replaceChildren(new Option('server default', ''));
    for (const model of list.data || []) select.add(new Option(model.id, model.id));
    select.value = chosen;
  } catch (error) {
    setStatus('chat-status', `Could not list models: ${error.message}`, true);
  }
}

// ---- chat -----------------------------------------------------------------

const conversation = [];
let chatAbort = null;

function addMessage(role, text) {
  const item = document.createElement('div');
  item.className = `msg ${role}`;
  const who = document.createElement('span');
  who.className = 'who';
  who.textContent = role === 'user' ? 'You' : 'agentstream';
  const body = document.createElement('span');
  body.className = 'text';
  body.textContent = text;
  item.append(who, body);
  $('chat-log').append(item);
  item.scrollIntoView({ block: 'nearest' });
  return { item, body };
}

function chatBusy(busy) {
  $('chat-send').disabled = busy;
  $('chat-stop').disabled = !busy;
}

$('chat-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const question = $('chat-input').value.trim();
  if (!question || chatAbort) return;
  $('chat-input').value = '';
  conversation.push({ role: 'user', content: question });
  addMessage('user', question);
  const view = addMessage('assistant', '');
  view.item.classList.add('streaming');

  const request = {
    messages: conversation.slice(),
    stream: true,
    stream_options: { include_usage: true },
  };
  const model = $('chat-model').value;
  if (model) request.model = model;
  const maxTokens = Number($('chat-max-tokens').value);
  if (maxTokens > 0) request.max_tokens = maxTokens;

  chatAbort = new AbortController();
  chatBusy(true);
  setStatus('chat-status', 'Streaming…');
  const started = performance.now();
  let firstChunkMs = null;
  let chunks = 0;
  let answer = '';
  let finish = null;
  let usage = null;
  try {
    const response = await postJson('/v1/chat/completions', request, {
      signal: chatAbort.signal,
      accept: 'text/event-stream',
    });
    for await (const event of sseEvents(response)) {
      if (event.data === '[DONE]') break;
      const chunk = JSON.parse(event.data);
      if (chunk.error) throw new ApiError(chunk.error.message);
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices || []) {
        if (choice.index !== 0) continue;
        const piece = choice.delta && choice.delta.content;
        if (piece) {
          if (firstChunkMs === null) firstChunkMs = performance.now() - started;
          answer += piece;
          chunks += 1;
          view.body.textContent = answer;
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    }
    conversation.push({ role: 'assistant', content: answer });
    const parts = [`${chunks} chunks`];
    if (firstChunkMs !== null) parts.push(`first after ${firstChunkMs.toFixed(0)} ms`);
    if (finish) parts.push(`finish: ${finish}`);
    if (usage) parts.push(`${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion tokens`);
    setStatus('chat-status', parts.join(' · '));
  } catch (error) {
    if (error.name === 'AbortError') {
      view.item.classList.add('stopped');
      if (answer) conversation.push({ role: 'assistant', content: answer });
      setStatus('chat-status', `Stopped after ${chunks} chunks: the connection is closed, so the server stopped generating.`);
    } else {
      setStatus('chat-status', error.message, true);
    }
  } finally {
    view.item.classList.remove('streaming');
    chatAbort = null;
    chatBusy(false);
  }
});

$('chat-stop').addEventListener('click', () => {
  if (chatAbort) chatAbort.abort();
});

$('chat-input').addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    $('chat-form').requestSubmit();
  }
});

$('chat-clear').addEventListener('click', () => {
  if (chatAbort) chatAbort.abort();
  conversation.length = 0;
  $('chat-log').replaceChildren();
  setStatus('chat-status', '');
});

// ---- task events ----------------------------------------------------------

const TASK_STATES = ['pending', 'running', 'succeeded', 'failed', 'cancelled'];

/**
 * Follows /v1/tasks/{id}/events until the server's `end` event. Calls
 * onEvent(taskEvent) for each event, onEnd() at the end and onTrouble(text)
 * while the connection is being re-established. Returns { close() }.
 */
function watchTask(taskId, { onEvent, onEnd, onTrouble }) {
  const url = `/v1/tasks/${encodeURIComponent(taskId)}/events`;
  if (!apiKey) {
    const source = new EventSource(url);
    const deliver = (e) => onEvent(JSON.parse(e.data).event || {});
    for (const state of TASK_STATES) source.addEventListener(state, deliver);
    source.addEventListener('end', () => {
      source.close();
      onEnd();
    });
    source.addEventListener('error', () => {
      // The browser reconnects by itself (with Last-Event-ID) unless closed.
      if (source.readyState === EventSource.CLOSED) onTrouble('The event stream was closed by the server.', true);
      else onTrouble('Connection lost; reconnecting and resuming…');
    });
    return { close: () => source.close() };
  }

  // With a key: the same stream over fetch(), resumed by Last-Event-ID.
  const abort = new AbortController();
  (async () => {
    let lastId = null;
    for (let attempt = 0; attempt < 10; attempt += 1) {
      try {
        const extra = { accept: 'text/event-stream' };
        if (lastId !== null) extra['last-event-id'] = lastId;
        const response = await fetch(url, { headers: headers(extra), signal: abort.signal });
        if (!response.ok) throw await errorOf(response);
        for await (const event of sseEvents(response)) {
          if (event.id !== null) lastId = event.id;
          if (event.type === 'end') {
            onEnd();
            return;
          }
          if (TASK_STATES.includes(event.type)) onEvent(JSON.parse(event.data).event || {});
        }
      } catch (error) {
        if (error.name === 'AbortError') return;
        if (error instanceof ApiError) {
          onTrouble(error.message, true);
          return;
        }
      }
      onTrouble('Connection lost; reconnecting and resuming…');
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
    onTrouble('Gave up reconnecting.', true);
  })();
  return { close: () => abort.abort() };
}

function stateName(event) {
  return String(event.state || '').replace(/^TASK_STATE_/, '').toLowerCase();
}

// ---- the demo task ----------------------------------------------------------

let taskWatch = null;
let taskId = null;

function showProgress(percent) {
  const clamped = Math.max(0, Math.min(100, Number(percent) || 0));
  $('task-progress').value = clamped;
  $('task-percent').textContent = `${Math.round(clamped)}%`;
}

$('task-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  if (taskWatch) taskWatch.close();
  $('task-events').replaceChildren();
  showProgress(0);
  const demo = {
    steps: Number($('task-steps').value),
    step_delay_ms: Number($('task-delay').value),
  };
  const failAt = Number($('task-fail').value);
  if (failAt > 0) demo.fail_at_step = failAt;
  try {
    $('task-start').disabled = true;
    const response = await postJson('/v1/tasks', { demo });
    const { task } = await response.json();
    taskId = field(task, 'taskId', 'task_id');
    setStatus('task-status', `Task ${taskId} started.`);
    $('task-cancel').disabled = false;
    taskWatch = watchTask(taskId, {
      onEvent(event) {
        const state = stateName(event);
        showProgress(event.percent);
        const item = document.createElement('li');
        const step = `${event.step || 0}/${field(event, 'totalSteps', 'total_steps') || 0}`;
        item.textContent = `#${event.sequence} ${state} ${step} ${event.message || ''} ${event.error || ''}`.trim();
        $('task-events').append(item);
        item.scrollIntoView({ block: 'nearest' });
        const failed = state === 'failed' || state === 'cancelled';
        setStatus('task-status', `Task ${taskId}: ${state}${event.error ? ` (${event.error})` : ''}`, failed);
      },
      onEnd() {
        taskWatch = null;
        $('task-start').disabled = false;
        $('task-cancel').disabled = true;
        $('task-status').textContent += ' · stream ended';
      },
      onTrouble(text, final = false) {
        setStatus('task-status', text, final);
        if (final) {
          $('task-start').disabled = false;
          $('task-cancel').disabled = true;
        }
      },
    });
  } catch (error) {
    setStatus('task-status', error.message, true);
    $('task-start').disabled = false;
  }
});

$('task-cancel').addEventListener('click', async () => {
  if (!taskId) return;
  try {
    await postJson(`/v1/tasks/${encodeURIComponent(taskId)}/cancel`, {});
  } catch (error) {
    setStatus('task-status', error.message, true);
  }
});

// ---- documents and RAG ------------------------------------------------------

// A small corpus about agentstream itself, so the page works on an empty server.
const SAMPLE_DOCUMENTS = [
  {
    id: 'demo-cancellation',
    title: 'Cancellation',
    source: 'demo/cancellation.md',
    text: 'Generation is pulled by the response stream: a token is produced only when the client asks for the next one. '
      + 'When a client cancels or disconnects, the server drops the response stream and the generation with it, so no further token is generated. '
      + 'Over HTTP, closing the connection of an SSE, NDJSON or text stream cancels it the same way; in a browser, aborting the fetch with an AbortController closes it.',
  },
  {
    id: 'demo-tasks',
    title: 'Long-running tasks',
    source: 'demo/tasks.md',
    text: 'Tasks outlive their watchers: leaving the event stream does not cancel a task, only an explicit cancel does. '
      + 'Every task event carries a sequence number, so a watcher that reconnects resumes after the last event it saw, with Last-Event-ID or after_sequence, without missing or repeating an event. '
      + 'A browser EventSource reconnects by itself; the server ends the stream with an end event after the terminal state.',
  },
  {
    id: 'demo-streaming',
    title: 'Streaming chunks',
    source: 'demo/streaming.md',
    text: 'Chat completions stream as OpenAI-style chunks: the first chunk of each choice carries the assistant role and the last its finish reason. '
      + 'Content is streamed in tokens and no chunk ever splits a UTF-8 character, so Chinese text and emoji arrive whole. '
      + 'Stop sequences are never sent, even when they span chunks.',
  },
  {
    id: 'demo-zh',
    title: '流式输出',
    source: 'demo/zh.md',
    text: 'agentstream 在生成的同时把每个词发送给客户端，客户端立即看到第一个词。'
      + '客户端断开连接时，服务器立即停止生成，不会再产生任何词。',
  },
];

async function countDocuments() {
  try {
    let count = 0;
    let pageToken = '';
    for (let page = 0; page < 50; page += 1) {
      const query = new URLSearchParams({ page_size: '100' });
      if (pageToken) query.set('page_token', pageToken);
      const response = await fetch(`/v1/documents?${query}`, { headers: headers() });
      if (!response.ok) throw await errorOf(response);
      const body = await response.json();
      count += (body.documents || []).length;
      pageToken = field(body, 'nextPageToken', 'next_page_token') || '';
      if (!pageToken) break;
    }
    setStatus('rag-docs', `${count} document${count === 1 ? '' : 's'} indexed.`);
  } catch (error) {
    setStatus('rag-docs', `Could not list documents: ${error.message}`, true);
  }
}

$('rag-ingest').addEventListener('click', async () => {
  $('rag-ingest').disabled = true;
  setStatus('rag-docs', 'Indexing…');
  try {
    const response = await postJson('/v1/documents', { documents: SAMPLE_DOCUMENTS });
    const { task } = await response.json();
    const id = field(task, 'taskId', 'task_id');
    await new Promise((resolve, reject) => {
      let last = null;
      watchTask(id, {
        onEvent(event) {
          last = event;
          setStatus('rag-docs', `Indexing… ${Math.round(event.percent || 0)}%`);
        },
        onEnd() {
          if (last && stateName(last) === 'succeeded') resolve();
          else reject(new Error(`ingestion ${last ? stateName(last) : 'ended'}${last && last.error ? `: ${last.error}` : ''}`));
        },
        onTrouble(text, final) {
          if (final) reject(new Error(text));
        },
      });
    });
    await countDocuments();
  } catch (error) {
    setStatus('rag-docs', error.message, true);
  } finally {
    $('rag-ingest').disabled = false;
  }
});

let ragAbort = null;

function renderPassages(passages) {
  const list = $('rag-passages');
  list.replaceChildren();
  passages.forEach((passage, i) => {
    const item = document.createElement('li');
    item.id = `passage-${i + 1}`;
    item.tabIndex = -1;
    const title = document.createElement('span');
    title.className = 'title';
    title.textContent = passage.title || field(passage, 'documentId', 'document_id');
    const score = document.createElement('span');
    score.className = 'score';
    score.textContent = `score ${Number(passage.score || 0).toFixed(3)}`;
    const source = document.createElement('span');
    source.className = 'source';
    source.textContent = passage.source || '';
    const text = document.createElement('span');
    text.className = 'text';
    text.textContent = passage.text || '';
    item.append(title, score, source, text);
    list.append(item);
  });
}

/** Renders the answer, turning each [n] that names a passage into a link to it. */
function renderAnswer(text, passageCount) {
  const answer = $('rag-answer');
  answer.replaceChildren();
  const pattern = /\[(\d+)\]/g;
  let at = 0;
  for (const match of text.matchAll(pattern)) {
    const n = Number(match[1]);
    if (n < 1 || n > passageCount) continue;
    answer.append(text.slice(at, match.index));
    const link = document.createElement('a');
    link.href = `#passage-${n}`;
    link.className = 'cite';
    link.textContent = match[0];
    link.setAttribute('aria-label', `citation ${n}: go to passage ${n}`);
    answer.append(link);
    at = match.index + match[0].length;
  }
  answer.append(text.slice(at));
}

$('rag-answer').addEventListener('click', (e) => {
  const link = e.target.closest('a.cite');
  if (!link) return;
  e.preventDefault();
  const passage = document.querySelector(link.getAttribute('href'));
  if (!passage) return;
  for (const other of document.querySelectorAll('#rag-passages li.highlight')) other.classList.remove('highlight');
  passage.classList.add('highlight');
  passage.scrollIntoView({ block: 'nearest', behavior: 'smooth' });
  passage.focus({ preventScroll: true });
});

$('rag-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const question = $('rag-input').value.trim();
  if (!question || ragAbort) return;
  ragAbort = new AbortController();
  $('rag-ask').disabled = true;
  $('rag-stop').disabled = false;
  $('rag-passages').replaceChildren();
  $('rag-answer').replaceChildren();
  setStatus('rag-status', 'Retrieving…');
  let passages = [];
  let answer = '';
  try {
    const response = await postJson('/v1/rag/answer', { question, top_k: Number($('rag-top-k').value) || 3 }, {
      signal: ragAbort.signal,
      accept: 'text/event-stream',
    });
    for await (const event of sseEvents(response)) {
      const message = JSON.parse(event.data);
      if (message.error) throw new ApiError(message.error.message);
      const retrieved = field(message, 'passagesRetrieved', 'passages_retrieved');
      const generation = field(message, 'generationStarted', 'generation_started');
      if (retrieved) {
        passages = retrieved.passages || [];
        renderPassages(passages);
        const ms = field(retrieved, 'retrievalMs', 'retrieval_ms') || 0;
        setStatus('rag-status', passages.length ? `${passages.length} passages in ${ms} ms; answering…` : 'No relevant passage: index the sample documents first.');
      } else if (generation) {
        setStatus('rag-status', `${$('rag-status').textContent.replace(/answering…$/, '')}answering with ${generation.model}…`);
      } else if (message.content) {
        answer += message.content.text || '';
        renderAnswer(answer, passages.length);
      } else if (message.done) {
        const done = message.done;
        const generationMs = field(done, 'generationMs', 'generation_ms') || 0;
        const retrievalMs = field(done, 'retrievalMs', 'retrieval_ms') || 0;
        setStatus('rag-status', `Done: retrieval ${retrievalMs} ms, generation ${generationMs} ms.`);
      }
    }
  } catch (error) {
    if (error.name === 'AbortError') setStatus('rag-status', 'Stopped.');
    else setStatus('rag-status', error.message, true);
  } finally {
    ragAbort = null;
    $('rag-ask').disabled = false;
    $('rag-stop').disabled = true;
  }
});

$('rag-stop').addEventListener('click', () => {
  if (ragAbort) ragAbort.abort();
});

// ---- start ------------------------------------------------------------------

showKeyStatus();
loadModels();
countDocuments();
