// The JavaScript side of the runtime: builds the `context` a mini-app's actions receive
// and drives one action. Evaluated once per action as a script whose value is a function
// of the native host bindings; nothing here is left on the global object except
// `console` (a convenience alias of `context.console`).
//
// The native bindings (`host`), defined in lib.rs:
//   emit(text), log(level, text), aiGenerate(requestJson) -> handle,
//   aiNext(handle) -> string | undefined (done), call(import, requestJson) -> answerJson.
(function (host) {
  'use strict';

  // One capability call: `{"op", ...args}` to the import, `{"ok"}` or `{"error"}` back.
  // A refusal (permission denied, not found, …) becomes an Error the app can catch.
  function call(imp, op, args) {
    const request = Object.assign({}, args, { op });
    const answer = JSON.parse(host.call(imp, JSON.stringify(request)));
    if (answer !== null && typeof answer === 'object' && 'error' in answer) {
      const e = answer.error || {};
      const err = new Error(`${imp}.${op}: ${e.code || 'failed'}: ${e.message || 'the host refused'}`);
      err.code = e.code || 'failed';
      throw err;
    }
    return answer === null || typeof answer !== 'object' ? undefined : answer.ok;
  }

  function show(value) {
    if (typeof value === 'string') return value;
    if (value instanceof Error) return value.stack ? `${value}\n${value.stack}` : String(value);
    try {
      const json = JSON.stringify(value);
      return json === undefined ? String(value) : json;
    } catch (_) {
      return String(value);
    }
  }

  function logger(level) {
    return (...args) => host.log(level, args.map(show).join(' '));
  }

  const console = Object.freeze({
    debug: logger(0),
    log: logger(1),
    info: logger(1),
    warn: logger(2),
    error: logger(3),
  });

  function generateText(request) {
    if (typeof request === 'string') request = { prompt: request };
    if (request === null || typeof request !== 'object' || typeof request.prompt !== 'string') {
      throw new TypeError('ai.generateText needs {prompt: string, system?: string, max_tokens?: number}');
    }
    const body = { prompt: request.prompt };
    if (request.system !== undefined) body.system = String(request.system);
    const maxTokens = request.max_tokens !== undefined ? request.max_tokens : request.maxTokens;
    if (maxTokens !== undefined) body.max_tokens = Math.floor(Number(maxTokens));
    const handle = host.aiGenerate(JSON.stringify(body));
    let done = false;
    const iterator = {
      next() {
        if (done) return Promise.resolve({ value: undefined, done: true });
        const text = host.aiNext(handle);
        if (text === undefined || text === null) {
          done = true;
          return Promise.resolve({ value: undefined, done: true });
        }
        return Promise.resolve({ value: text, done: false });
      },
      return() {
        done = true;
        return Promise.resolve({ value: undefined, done: true });
      },
      [Symbol.asyncIterator]() {
        return this;
      },
    };
    return iterator;
  }

  const builtinTools = {
    readFile: async (path) => call('fs', 'read', { path: String(path) }),
    readFileBase64: async (path) => call('fs', 'read_base64', { path: String(path) }),
    writeFile: async (path, text) => {
      call('fs', 'write', { path: String(path), content: String(text) });
    },
    listDir: async (path) => call('fs', 'list', { path: String(path) }),
    pdfText: async (path) => call('fs', 'pdf_text', { path: String(path) }),
    fetch: async (url, options) => {
      const o = options || {};
      const request = { url: String(url) };
      if (o.method !== undefined) request.method = String(o.method);
      if (o.headers !== undefined) request.headers = o.headers;
      if (o.body !== undefined) {
        request.body = typeof o.body === 'string' ? o.body : JSON.stringify(o.body);
      }
      return call('http', 'fetch', request);
    },
    parseCsv: async (text, opts) => {
      const o = opts || {};
      const request = { text: String(text) };
      if (o.delimiter !== undefined) request.delimiter = String(o.delimiter);
      const headers = o.has_headers !== undefined ? o.has_headers : o.hasHeaders;
      if (headers !== undefined) request.has_headers = Boolean(headers);
      return call('tool', 'csv_parse', request);
    },
    readClipboard: async () => call('clipboard', 'read', {}),
    writeClipboard: async (text) => {
      call('clipboard', 'write', { text: String(text) });
    },
  };

  const storage = Object.freeze({
    get: async (key) => {
      const value = call('storage', 'get', { key: String(key) });
      return value === undefined ? null : value;
    },
    set: async (key, value) => {
      call('storage', 'set', { key: String(key), value });
    },
    delete: async (key) => {
      call('storage', 'delete', { key: String(key) });
    },
    keys: async () => call('storage', 'keys', {}),
  });

  let env;
  function makeContext(toolsNamespace) {
    const tools = Object.assign({}, builtinTools);
    if (toolsNamespace) {
      for (const name of Object.keys(toolsNamespace)) tools[name] = toolsNamespace[name];
    }
    const context = {
      emit(text) {
        host.emit(typeof text === 'string' ? text : show(text));
      },
      ai: Object.freeze({ generateText }),
      tools: Object.freeze(tools),
      storage,
      console,
    };
    Object.defineProperty(context, 'env', {
      enumerable: true,
      get() {
        if (env === undefined) env = Object.freeze(call('env', 'get', {}));
        return env;
      },
    });
    return Object.freeze(context);
  }

  function describe(error) {
    if (error instanceof Error) {
      const head = `${error.name || 'Error'}: ${error.message}`;
      // The runtime's own frames (this file, "<runtime>") say nothing to the app's author.
      const stack =
        typeof error.stack === 'string'
          ? error.stack
              .split('\n')
              .filter((line) => line.trim() !== '' && !line.includes('<runtime>'))
              .join('\n')
          : '';
      return stack ? `${head}\n${stack}` : head;
    }
    return `uncaught: ${show(error)}`;
  }

  globalThis.console = console;

  // Runs `action` of the bot-logic module namespace; resolves to undefined on success or
  // to the failure's text (message and stack) when the action threw or rejected.
  return async function run(logic, tools, action, payloadJson) {
    try {
      const fn = logic[action];
      if (typeof fn !== 'function') {
        const exported = Object.keys(logic).filter((k) => typeof logic[k] === 'function');
        return `bot-logic.js exports no function named '${action}' (it exports: ${exported.join(', ') || 'none'})`;
      }
      const result = await fn(JSON.parse(payloadJson), makeContext(tools));
      if (typeof result === 'string') host.emit(result);
      else if (result !== undefined && result !== null) host.emit(show(result));
      return undefined;
    } catch (error) {
      return describe(error);
    }
  };
})
