import { api, IAddKey, IKeyInfo } from '../api';
import { ByokApiError } from '../errors';
import {
  IKeyFormData,
  keyLabel,
  oneLine,
  parseKeyForm,
  saveKey,
  storedMessage
} from '../keyform';
import { answer, calls } from './mocks/services';

const CANARY = 'sk-keyform-canary-0123456789abcdefZq9X';
const WORK: IKeyFormData = { provider: 'openai', name: 'work', tier: null, label: 'openai@work' };

function info(label: string, last4: string): IKeyInfo {
  return { label, last4 } as IKeyInfo;
}

describe('parseKeyForm', () => {
  it('reads what the magic sends and rebuilds the label from provider and name', () => {
    expect(
      parseKeyForm({ provider: 'openai', name: 'work', tier: null, label: 'openai@work' })
    ).toEqual(WORK);
    expect(parseKeyForm({ provider: 'gemini', name: 'default', tier: 'free', label: 'x' })).toEqual({
      provider: 'gemini',
      name: 'default',
      tier: 'free',
      label: 'gemini'
    });
    // a name and tier left out mean the default key, no tier
    expect(parseKeyForm({ provider: 'xai' })).toEqual({
      provider: 'xai',
      name: 'default',
      tier: null,
      label: 'xai'
    });
  });

  it('refuses data that does not name a key the keystore accepts', () => {
    for (const bad of [
      null,
      'openai',
      [],
      {},
      { provider: '' },
      { provider: 'open ai' },
      { provider: 'openai', name: '../x' },
      { provider: 'openai', name: 'n'.repeat(65) },
      { provider: 'openai', tier: 'gold' },
      { provider: 1 }
    ]) {
      expect(typeof parseKeyForm(bad)).toBe('string');
    }
  });

  it('labels as the server does', () => {
    expect(keyLabel('openai', 'default')).toBe('openai');
    expect(keyLabel('openai', 'work')).toBe('openai@work');
  });
});

describe('saveKey', () => {
  beforeEach(() => {
    calls.length = 0;
  });

  it('empties the field before the request is sent, posts the key, says what was stored', async () => {
    const field = { value: `  ${CANARY}\n` };
    const sent: IAddKey[] = [];
    let fieldWhenSent: string | null = null;
    const outcome = await saveKey(WORK, field, body => {
      fieldWhenSent = field.value;
      sent.push(body);
      return Promise.resolve(info('openai@work', 'Zq9X'));
    });
    expect(fieldWhenSent).toBe('');
    expect(sent).toEqual([{ provider: 'openai', key: CANARY, name: 'work', tier: null }]);
    expect(outcome).toEqual({ ok: true, message: 'stored openai@work (…Zq9X)' });
    expect(outcome.message).not.toContain(CANARY);
    expect(field.value).toBe('');
  });

  it('posts to POST {base_url}/byok/keys through the one API client', async () => {
    answer(201, { label: 'gemini', last4: 'abcd', id: 'k1' });
    const field = { value: CANARY };
    const data: IKeyFormData = { provider: 'gemini', name: 'default', tier: 'free', label: 'gemini' };
    const outcome = await saveKey(data, field, api.addKey);
    expect(outcome).toEqual({ ok: true, message: 'stored gemini (…abcd)' });
    expect(calls).toHaveLength(1);
    expect(calls[0].url).toBe('http://127.0.0.1:8888/lab-base/byok/keys');
    expect(calls[0].init.method).toBe('POST');
    expect(JSON.parse(String(calls[0].init.body))).toEqual({
      provider: 'gemini',
      key: CANARY,
      name: 'default',
      tier: 'free'
    });
  });

  it('sends nothing for an empty key', async () => {
    const addKey = jest.fn();
    const outcome = await saveKey(WORK, { value: '  \n' }, addKey);
    expect(addKey).not.toHaveBeenCalled();
    expect(outcome.ok).toBe(false);
    expect(outcome.message).toMatch(/No key entered/);
  });

  it("shows the server's error on one line, and the field stays empty", async () => {
    const field = { value: CANARY };
    const outcome = await saveKey(WORK, field, () =>
      Promise.reject(
        new ByokApiError('the key has non-printable characters:\n  copy it again', 400, 'BadInput')
      )
    );
    expect(outcome).toEqual({
      ok: false,
      message: 'the key has non-printable characters: copy it again'
    });
    expect(field.value).toBe('');
  });

  it('also when the server is unreachable', async () => {
    answer(404, '<html>404</html>', 'Not Found');
    const outcome = await saveKey(WORK, { value: CANARY }, api.addKey);
    expect(outcome.ok).toBe(false);
    expect(outcome.message).toMatch(/server extension is not running/);
    expect(outcome.message).not.toMatch(/\n/);
  });
});

describe('messages', () => {
  it('masks to the last 4 characters', () => {
    expect(storedMessage(info('openai@work', 'abcd'))).toBe('stored openai@work (…abcd)');
    expect(storedMessage(info('secret@gh', ''))).toBe('stored secret@gh (…****)');
  });

  it('keeps errors to one readable line', () => {
    expect(oneLine('a\n\n b\tc ')).toBe('a b c');
    expect(oneLine('')).toBe('the key was not stored');
    const long = oneLine('x'.repeat(1000));
    expect(long).toHaveLength(300);
    expect(long.endsWith('…')).toBe(true);
  });
});
