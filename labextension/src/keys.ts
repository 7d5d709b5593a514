/**
 * The Keys section: what is configured per provider (masked to the last 4 characters), add,
 * replace, delete and verify, and the keystore's protection tier.
 *
 * A key typed here lives only in the password field until submit: the field is emptied before
 * the request is even sent, and nothing else keeps it (no state, no storage, no echo).
 */
import { Dialog, showDialog, showErrorMessage } from '@jupyterlab/apputils';

import { api, IKeyInfo, IKeysList, IProviderKeys, IVerifyResult } from './api';
import { clear, h, options, uid } from './dom';
import { messageOf } from './errors';
import { ago, maskedKey } from './transforms';

const PROVIDER_NAMES: Record<string, string> = {
  openai: 'OpenAI',
  anthropic: 'Anthropic',
  gemini: 'Google Gemini',
  xai: 'xAI',
  tavily: 'Tavily (web search)'
};

export function providerTitle(provider: string): string {
  return PROVIDER_NAMES[provider] ?? provider;
}

export class KeysSection {
  readonly node: HTMLElement;
  private list: HTMLElement;
  private tier: HTMLElement;
  private form: HTMLFormElement;
  private provider: HTMLSelectElement;
  private name: HTMLInputElement;
  private keyTier: HTMLSelectElement;
  private secret: HTMLInputElement;
  private submit: HTMLButtonElement;
  private formTitle: HTMLElement;
  private results = new Map<string, IVerifyResult | { error: string }>();
  private data: IKeysList | null = null;

  constructor(private readonly onChange: () => void) {
    this.tier = h('p', { class: 'jp-byok-tier', 'data-testid': 'byok-tier' });
    this.list = h('div', { class: 'jp-byok-keys', 'aria-live': 'polite' });

    const providerId = uid('byok-provider');
    const nameId = uid('byok-name');
    const tierId = uid('byok-keytier');
    const secretId = uid('byok-secret');
    this.provider = h('select', { id: providerId, name: 'provider', 'aria-label': 'Provider' });
    this.provider.addEventListener('change', () => this.syncTierChoices());
    this.name = h('input', {
      id: nameId,
      type: 'text',
      name: 'name',
      value: 'default',
      placeholder: 'default',
      'aria-label': 'Key name',
      autocomplete: 'off',
      spellcheck: 'false'
    });
    this.keyTier = h('select', { id: tierId, name: 'tier', 'aria-label': 'Key tier' });
    this.secret = h('input', {
      id: secretId,
      type: 'password',
      name: 'byok-secret',
      required: true,
      placeholder: 'paste the key',
      'aria-label': 'API key',
      autocomplete: 'new-password',
      spellcheck: 'false',
      'data-lpignore': 'true',
      'data-1p-ignore': 'true'
    });
    this.submit = h('button', {
      type: 'submit',
      class: 'jp-mod-styled jp-mod-accept jp-byok-primary',
      text: 'Save key',
      'aria-label': 'Save key'
    });
    this.formTitle = h('h4', { text: 'Add a key' });
    this.form = h(
      'form',
      {
        class: 'jp-byok-form',
        'aria-label': 'Add or replace a key',
        autocomplete: 'off',
        onsubmit: (event: Event) => {
          event.preventDefault();
          void this.save();
        }
      },
      this.formTitle,
      h('label', { for: providerId, text: 'Provider' }),
      this.provider,
      h('label', { for: nameId, text: 'Name' }),
      this.name,
      h('label', { for: tierId, text: 'Tier' }),
      this.keyTier,
      h('label', { for: secretId, text: 'Key' }),
      this.secret,
      h(
        'div',
        { class: 'jp-byok-form-actions' },
        this.submit,
        h('button', {
          type: 'button',
          class: 'jp-mod-styled jp-mod-reject',
          text: 'Clear',
          'aria-label': 'Clear the form',
          onclick: () => this.resetForm()
        })
      ),
      h('p', {
        class: 'jp-byok-hint',
        text:
          'The key is sent once to your own Jupyter server, encrypted into the keystore there, ' +
          'and never shown again: only its last 4 characters are.'
      })
    );
    this.syncProviders(['openai', 'anthropic', 'gemini', 'xai', 'tavily']);
    this.node = h(
      'section',
      { class: 'jp-byok-section', 'aria-label': 'Keys' },
      this.tier,
      this.list,
      this.form
    );
  }

  /** Put the cursor in the key field, for the "add key" command. */
  focusAdd(provider?: string): void {
    if (provider) {
      this.provider.value = provider;
      this.syncTierChoices();
    }
    this.provider.focus();
  }

  async refresh(): Promise<void> {
    try {
      this.data = await api.listKeys();
    } catch (error) {
      clear(this.list);
      this.list.appendChild(h('p', { class: 'jp-byok-error', text: messageOf(error) }));
      throw error;
    }
    this.render();
  }

  private syncProviders(names: string[]): void {
    const current = this.provider.value;
    clear(this.provider);
    for (const opt of options(
      names.map(n => [n, providerTitle(n)]),
      current || names[0]
    )) {
      this.provider.appendChild(opt);
    }
    this.syncTierChoices();
  }

  private syncTierChoices(): void {
    const current = this.keyTier.value;
    clear(this.keyTier);
    const choices: Array<[string, string]> =
      this.provider.value === 'gemini'
        ? [
            ['paid', 'paid (billing enabled)'],
            ['free', 'free tier (Google may train on data)']
          ]
        : [
            ['', 'standard'],
            ['free', 'free tier'],
            ['paid', 'paid']
          ];
    for (const opt of options(choices, current)) {
      this.keyTier.appendChild(opt);
    }
  }

  private render(): void {
    const data = this.data;
    if (!data) {
      return;
    }
    this.tier.textContent = `Keystore protection: ${data.tier}`;
    this.tier.title = data.tier_description;
    this.tier.appendChild(h('span', { class: 'jp-byok-muted', text: ` (${data.tier_description})` }));
    if (data.providers.length) {
      this.syncProviders(data.providers.map(p => p.provider));
    }
    clear(this.list);
    for (const provider of data.providers) {
      this.list.appendChild(this.renderProvider(provider));
    }
  }

  private renderProvider(p: IProviderKeys): HTMLElement {
    const badge = p.configured
      ? h('span', { class: 'jp-byok-badge jp-byok-ok', text: 'configured' })
      : h('span', { class: 'jp-byok-badge', text: 'not configured' });
    const rows = p.stored.map(key => this.renderKey(key));
    const env = p.env_var
      ? h('p', {
          class: 'jp-byok-muted',
          text: `Also available from the environment variable ${p.env_var}.`
        })
      : null;
    const add = p.stored.length
      ? null
      : h('button', {
          type: 'button',
          class: 'jp-byok-link',
          text: 'Add key',
          'aria-label': `Add a ${providerTitle(p.provider)} key`,
          onclick: () => this.startReplace(p.provider, 'default', false)
        });
    return h(
      'div',
      {
        class: 'jp-byok-provider',
        'data-provider': p.provider,
        'data-configured': String(p.configured)
      },
      h('div', { class: 'jp-byok-provider-head' }, h('strong', { text: providerTitle(p.provider) }), badge, add),
      env,
      rows
    );
  }

  private renderKey(key: IKeyInfo): HTMLElement {
    const result = this.results.get(key.id);
    const who = `${providerTitle(key.provider)} key "${key.name}"`;
    const verify = h('button', {
      type: 'button',
      class: 'jp-mod-styled jp-byok-small',
      text: 'Verify',
      'aria-label': `Verify ${who}`,
      onclick: () => void this.verify(key, verify)
    });
    return h(
      'div',
      { class: 'jp-byok-key', 'data-key-id': key.id, 'data-testid': 'byok-key' },
      h(
        'div',
        { class: 'jp-byok-key-line' },
        h('span', { class: 'jp-byok-key-name', text: key.name }),
        h('code', {
          class: 'jp-byok-masked',
          text: maskedKey(key.last4),
          'aria-label': `key ending in ${key.last4}`
        }),
        key.tier ? h('span', { class: 'jp-byok-badge', text: `${key.tier} tier` }) : null
      ),
      key.warning
        ? h('p', { class: 'jp-byok-warning', role: 'note', text: `⚠ ${key.warning}` })
        : null,
      h('p', {
        class: 'jp-byok-muted',
        text: `Last verified: ${ago(key.last_verified)}${key.base_url ? ` · ${key.base_url}` : ''}`,
        title: key.last_verified ?? 'never verified'
      }),
      h(
        'div',
        { class: 'jp-byok-key-actions' },
        verify,
        h('button', {
          type: 'button',
          class: 'jp-mod-styled jp-byok-small',
          text: 'Replace',
          'aria-label': `Replace ${who}`,
          onclick: () => this.startReplace(key.provider, key.name, true, key.tier)
        }),
        h('button', {
          type: 'button',
          class: 'jp-mod-styled jp-mod-warn jp-byok-small',
          text: 'Delete',
          'aria-label': `Delete ${who}`,
          onclick: () => void this.remove(key)
        })
      ),
      result ? this.renderResult(result) : null
    );
  }

  private renderResult(result: IVerifyResult | { error: string }): HTMLElement {
    if ('error' in result && !('ok' in result)) {
      return h('p', {
        class: 'jp-byok-verify jp-byok-error',
        role: 'status',
        'data-ok': 'false',
        text: `✗ ${result.error}`
      });
    }
    const r = result as IVerifyResult;
    const latency = latencyOf(r);
    const answer = r.message ?? r.detail ?? (r as any).answer ?? (r as any).error ?? '';
    const models = Array.isArray(r.models) ? `${r.models.length} models` : r.models ? `${r.models} models` : '';
    const parts = [
      r.ok ? '✓ Verified' : '✗ Refused',
      latency !== null ? `in ${latency.toFixed(2)} s` : '',
      models ? `· ${models}` : '',
      answer ? `· ${answer}` : ''
    ].filter(Boolean);
    return h('p', {
      class: `jp-byok-verify ${r.ok ? 'jp-byok-ok-text' : 'jp-byok-error'}`,
      role: 'status',
      'data-ok': String(Boolean(r.ok)),
      text: parts.join(' ')
    });
  }

  private startReplace(provider: string, name: string, replace: boolean, tier?: string | null): void {
    this.provider.value = provider;
    this.syncTierChoices();
    this.name.value = name;
    if (tier !== undefined) {
      this.keyTier.value = tier ?? '';
    }
    this.formTitle.textContent = replace
      ? `Replace ${providerTitle(provider)} key "${name}"`
      : `Add a ${providerTitle(provider)} key`;
    this.submit.textContent = replace ? 'Replace key' : 'Save key';
    this.submit.setAttribute('aria-label', this.submit.textContent);
    this.secret.focus();
  }

  private resetForm(): void {
    this.secret.value = '';
    this.name.value = 'default';
    this.formTitle.textContent = 'Add a key';
    this.submit.textContent = 'Save key';
    this.submit.setAttribute('aria-label', 'Save key');
  }

  private async save(): Promise<void> {
    // Take the key out of the field first: whatever happens next, it is not left in the page.
    const key = this.secret.value;
    this.secret.value = '';
    const provider = this.provider.value;
    const name = this.name.value.trim() || 'default';
    if (!key.trim()) {
      await showErrorMessage('No key entered', 'Paste the API key into the Key field.');
      this.secret.focus();
      return;
    }
    this.submit.disabled = true;
    try {
      await api.addKey({ provider, key: key.trim(), name, tier: this.keyTier.value || null });
      this.resetForm();
      await this.refresh();
      this.onChange();
    } catch (error) {
      await showErrorMessage('Could not save the key', messageOf(error));
    } finally {
      this.submit.disabled = false;
    }
  }

  private async verify(key: IKeyInfo, button: HTMLButtonElement): Promise<void> {
    button.disabled = true;
    button.textContent = 'Verifying…';
    try {
      this.results.set(key.id, await api.verifyKey(key.id));
    } catch (error) {
      this.results.set(key.id, { error: messageOf(error) });
    }
    try {
      await this.refresh();
    } catch {
      this.render();
    }
  }

  private async remove(key: IKeyInfo): Promise<void> {
    const result = await showDialog({
      title: 'Delete key?',
      body: `Delete the ${providerTitle(key.provider)} key "${key.name}" (${maskedKey(key.last4)}) from the keystore? This cannot be undone.`,
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Delete' })]
    });
    if (!result.button.accept) {
      return;
    }
    try {
      await api.deleteKey(key.id);
      this.results.delete(key.id);
      await this.refresh();
      this.onChange();
    } catch (error) {
      await showErrorMessage('Could not delete the key', messageOf(error));
    }
  }
}

export function latencyOf(result: Record<string, unknown>): number | null {
  for (const [name, scale] of [
    ['latency_s', 1],
    ['latency', 1],
    ['latency_ms', 0.001]
  ] as Array<[string, number]>) {
    const value = result[name];
    if (typeof value === 'number' && Number.isFinite(value)) {
      return value * scale;
    }
  }
  return null;
}
