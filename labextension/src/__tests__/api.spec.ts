import { api, requestAPI, SERVER_MISSING, usageQuery } from '../api';
import { ByokApiError, errorFromResponse, NETWORK_DOWN, parseBody } from '../errors';
import { answer, calls, fail } from './mocks/services';

const unexpected = (): never => {
  throw new Error('expected the request to fail');
};
const caught = (error: unknown): ByokApiError => error as ByokApiError;

beforeEach(() => {
  calls.length = 0;
});

describe('requestAPI', () => {
  it('joins the URL under {base_url}/byok and returns the JSON', async () => {
    answer(200, { version: '0.1.0' });
    const data = await requestAPI<{ version: string }>('status');
    expect(data.version).toBe('0.1.0');
    expect(calls[0].url).toBe('http://127.0.0.1:8888/lab-base/byok/status');
    // Not 'no-store': that would make ServerConnection append a cache-busting timestamp.
    expect(calls[0].init.cache).toBe('no-cache');
  });

  it('maps a 404 without a JSON error to the server-missing message', async () => {
    answer(404, '<html>404: Not Found</html>', 'Not Found');
    const error = await requestAPI('status').then(unexpected, caught);
    expect(error).toBeInstanceOf(ByokApiError);
    expect(error.message).toBe(SERVER_MISSING);
    expect(error.serverMissing).toBe(true);
    expect(error.message).toMatch(/pip install jupyter_byok/);
  });

  it("keeps the server's own message for a 404 that is a domain error", async () => {
    answer(404, { error: 'NotFound', message: 'no stored key with id abc', status: 404 });
    const error = await api.deleteKey('abc').then(unexpected, caught);
    expect(error.message).toBe('no stored key with id abc');
    expect(error.error).toBe('NotFound');
    expect(error.serverMissing).toBe(false);
  });

  it('carries status, error class and provider of a provider failure', async () => {
    answer(502, {
      error: 'AuthenticationError',
      message: 'openai refused the key (401)',
      status: 502,
      provider: 'openai'
    });
    const error = await api.verifyKey('k1').then(unexpected, caught);
    expect(error.status).toBe(502);
    expect(error.error).toBe('AuthenticationError');
    expect(error.provider).toBe('openai');
    expect(error.message).toBe('openai refused the key (401)');
  });

  it('turns a network failure into a clear message', async () => {
    fail(new TypeError('Failed to fetch'));
    const error = await api.status().then(unexpected, caught);
    expect(error).toBeInstanceOf(ByokApiError);
    expect(error.status).toBe(0);
    expect(error.message).toContain(NETWORK_DOWN);
    expect(error.message).toContain('Failed to fetch');
  });

  it('returns null for an empty 204 body', async () => {
    answer(204, '');
    await expect(api.deleteKey('abc')).resolves.toBeNull();
    expect(calls[0].init.method).toBe('DELETE');
    expect(calls[0].url).toMatch(/\/byok\/keys\/abc$/);
  });
});

describe('endpoints', () => {
  it('sends a new key only in a JSON POST body', async () => {
    answer(201, { id: 'k1', last4: 'WXYZ' });
    await api.addKey({ provider: 'openai', key: 'sk-secret-WXYZ', name: 'work', tier: null });
    const call = calls[0];
    expect(call.init.method).toBe('POST');
    expect(call.url).not.toContain('sk-secret');
    expect(JSON.parse(String(call.init.body))).toEqual({
      provider: 'openai',
      key: 'sk-secret-WXYZ',
      name: 'work',
      tier: null
    });
    expect((call.init.headers as Record<string, string>)['Content-Type']).toBe('application/json');
  });

  it('escapes key ids in paths', async () => {
    answer(200, { ok: true });
    await api.verifyKey('a/b');
    expect(calls[0].url).toMatch(/\/byok\/keys\/a%2Fb\/verify$/);
    expect(calls[0].init.method).toBe('POST');
  });

  it('PUTs budgets as {budgets: [...]}', async () => {
    answer(200, { budgets: [] });
    await api.setBudgets([{ period: 'day', scope: 'total', limit_usd: '5' }]);
    expect(calls[0].init.method).toBe('PUT');
    expect(JSON.parse(String(calls[0].init.body))).toEqual({
      budgets: [{ period: 'day', scope: 'total', limit_usd: '5' }]
    });
  });

  it('builds the usage query string', async () => {
    expect(usageQuery({ since: '7d', by: ['provider', 'model'], limit: 20 })).toBe(
      'since=7d&by=provider%2Cmodel&limit=20'
    );
    expect(usageQuery({ since: '2026-01-01', until: '2026-01-08', bucket: 'day' })).toBe(
      'since=2026-01-01&until=2026-01-08&bucket=day'
    );
    expect(usageQuery({})).toBe('since=today');
    expect(usageQuery({ since: '30d', scope: 'team' })).toBe('since=30d&scope=team');
    expect(usageQuery({ since: '30d', scope: undefined })).toBe('since=30d');
    answer(200, { groups: [], recent: [], total_usd: '0' });
    await api.usage({ since: '30d', by: ['feature'] });
    expect(calls[0].url).toMatch(/\/byok\/usage\?since=30d&by=feature$/);
  });
});

describe('errorFromResponse', () => {
  it('explains a bare 403 as an expired session', () => {
    const error = errorFromResponse(403, 'Forbidden', null);
    expect(error.message).toMatch(/session may have expired/);
  });

  it('points to the server log for a bare 500', () => {
    const error = errorFromResponse(500, 'Internal Server Error', '<html>');
    expect(error.message).toMatch(/500 Internal Server Error.*log/);
  });

  it('falls back to the status text, then the code', () => {
    expect(errorFromResponse(418, "I'm a teapot", null).message).toBe("I'm a teapot");
    expect(errorFromResponse(418, '', null).message).toBe('HTTP 418');
  });

  it('uses error when there is no message', () => {
    expect(errorFromResponse(400, 'Bad', { error: 'BadInput' }).message).toBe('BadInput');
  });
});

describe('parseBody', () => {
  it('parses JSON, keeps text, maps empty to null', () => {
    expect(parseBody('{"a":1}')).toEqual({ a: 1 });
    expect(parseBody('not json')).toBe('not json');
    expect(parseBody('')).toBeNull();
  });
});
