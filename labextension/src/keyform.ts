/**
 * The logic of the key form that `%byok keys set PROVIDER` displays (rendered by `mime.ts`).
 *
 * The kernel sends only what names the key (provider, name, tier, label). The key is typed
 * into the form's password field and posted from the browser straight to the server's
 * `POST /byok/keys`: it never passes through the kernel and never enters the output model,
 * so it is in neither the kernel's memory nor the notebook file. Pure (no DOM, no JupyterLab
 * imports) so that it is unit-tested directly.
 */
import type { IAddKey, IKeyInfo } from './api';
import { messageOf } from './errors';

/** Written by `jupyter_byok/magics.py` (`KEYFORM_MIME`). */
export const KEYFORM_MIME = 'application/vnd.jupyter.byok.keyform+json';

/** Fired on `document` after the form stored a key, so the BYOK panel refreshes. */
export const KEYS_CHANGED_EVENT = 'byok:keys-changed';

/** The bundle's data: what names the key, never a key. */
export interface IKeyFormData {
  provider: string;
  name: string;
  tier: 'free' | 'paid' | null;
  label: string;
}

/** The keystore's rule for provider and key names (`NAME_RE` in keystore.py). */
const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/** `provider` for the default key, `provider@name` otherwise (as the server labels keys). */
export function keyLabel(provider: string, name: string): string {
  return name === 'default' ? provider : `${provider}@${name}`;
}

/**
 * Read the bundle's data, or say why it cannot be used. The label shown is rebuilt from the
 * provider and name, so what the form says is what it stores.
 */
export function parseKeyForm(data: unknown): IKeyFormData | string {
  if (!data || typeof data !== 'object' || Array.isArray(data)) {
    return 'This key form has no data: run `%byok keys set PROVIDER` again.';
  }
  const record = data as Record<string, unknown>;
  const provider = record.provider;
  const name = record.name ?? 'default';
  const tier = record.tier ?? null;
  if (typeof provider !== 'string' || !NAME.test(provider)) {
    return 'This key form names no valid provider: run `%byok keys set PROVIDER` again.';
  }
  if (typeof name !== 'string' || !NAME.test(name)) {
    return 'This key form names no valid key name: run `%byok keys set PROVIDER` again.';
  }
  if (tier !== null && tier !== 'free' && tier !== 'paid') {
    return 'This key form names an unknown tier: use --tier free or --tier paid.';
  }
  return { provider, name, tier, label: keyLabel(provider, name) };
}

/** The key form's password field, or anything with a value (the tests' stand-in). */
export interface ISecretField {
  value: string;
}

export interface ISaveOutcome {
  ok: boolean;
  message: string;
}

/** What the form says after a save: "stored openai@work (…abcd)". */
export function storedMessage(info: Pick<IKeyInfo, 'label' | 'last4'>): string {
  return `stored ${info.label} (…${info.last4 || '****'})`;
}

/** An error on one line, not too long to read at a glance. */
export function oneLine(text: string, limit = 300): string {
  const line = text.replace(/\s+/g, ' ').trim() || 'the key was not stored';
  return line.length > limit ? `${line.slice(0, limit - 1)}…` : line;
}

/**
 * Take the key out of `field` (emptied before the request is even sent, whatever happens
 * next), post it with `addKey` and say what happened. Never throws.
 */
export async function saveKey(
  data: IKeyFormData,
  field: ISecretField,
  addKey: (body: IAddKey) => Promise<IKeyInfo>
): Promise<ISaveOutcome> {
  const key = field.value.trim();
  field.value = '';
  if (!key) {
    return { ok: false, message: 'No key entered: paste the API key into the field.' };
  }
  try {
    const info = await addKey({
      provider: data.provider,
      key,
      name: data.name,
      tier: data.tier
    });
    return { ok: true, message: storedMessage(info) };
  } catch (error) {
    return { ok: false, message: oneLine(messageOf(error)) };
  }
}
