/**
 * The "Local models" section: the GGUF models that run in the notebook's kernel.
 *
 * A list with each model's facts (size, quantization, parameters, context, RAM estimate,
 * last use), Pull (a Hub spec, with a progress bar and Cancel), Remove (confirmed), Set
 * default and Test (a short prompt answered by a child process of the server; tokens/s).
 * Served by /byok/local/*; the server downloads and inspects, it never runs a model.
 */
import { Dialog, showDialog, showErrorMessage } from '@jupyterlab/apputils';

import { api, ILocalModel, ILocalOverview, IPullJob } from './api';
import { clear, h } from './dom';
import { messageOf } from './errors';
import { formatBytes, formatCount, progressText } from './localformat';

export { formatBytes, formatCount, progressText };

/** How often a running pull is polled (ms). */
export const POLL_MS = 250;

export class LocalSection {
  readonly node: HTMLElement;
  private list: HTMLElement;
  private spec: HTMLInputElement;
  private name: HTMLInputElement;
  private pullButton: HTMLButtonElement;
  private pulling: HTMLElement;
  private status: HTMLElement;
  private job: IPullJob | null = null;
  private tests = new Map<string, string>();

  constructor(private readonly onChange: () => void) {
    this.spec = h('input', {
      type: 'text',
      class: 'jp-byok-local-spec',
      placeholder: 'hf:OWNER/REPO/FILE.gguf',
      'aria-label': 'Model to pull (hf:OWNER/REPO/FILE.gguf or an https URL)',
      onkeydown: (event: KeyboardEvent) => {
        if (event.key === 'Enter') {
          void this.pull();
        }
      }
    });
    this.name = h('input', {
      type: 'text',
      class: 'jp-byok-local-name',
      placeholder: 'name (optional)',
      'aria-label': 'Name to use the model by (optional)'
    });
    this.pullButton = h('button', {
      type: 'button',
      class: 'jp-mod-styled jp-mod-accept jp-byok-primary',
      text: 'Pull',
      'aria-label': 'Pull model',
      onclick: () => void this.pull()
    });
    this.pulling = h('div', { class: 'jp-byok-local-pulling', hidden: true, 'aria-live': 'polite' });
    this.status = h('p', { class: 'jp-byok-local-status', role: 'status' });
    this.list = h('div', { class: 'jp-byok-local-list', 'aria-live': 'polite' });
    this.node = h(
      'section',
      { class: 'jp-byok-section jp-byok-local', 'aria-label': 'Local models' },
      h('p', {
        class: 'jp-byok-hint',
        text:
          'GGUF models that run in your notebook kernel, offline, at no cost. Pull one from ' +
          'the Hugging Face Hub (hf:OWNER/REPO/FILE.gguf, or hf:OWNER/REPO when it has a ' +
          'single GGUF file); it is verified against the Hub\u2019s SHA-256. Gated models use ' +
          'the keystore secret \u201chuggingface\u201d.'
      }),
      h('div', { class: 'jp-byok-local-form' }, this.spec, this.name, this.pullButton),
      this.pulling,
      this.status,
      this.list
    );
  }

  async refresh(): Promise<void> {
    let overview: ILocalOverview;
    try {
      overview = await api.localModels();
    } catch (error) {
      clear(this.list);
      this.list.appendChild(h('p', { class: 'jp-byok-error', text: messageOf(error) }));
      throw error;
    }
    this.render(overview);
    const running = overview.pulls.find(job => job.state === 'running');
    if (running && !this.job) {
      void this.follow(running); // a pull started elsewhere (or before a reload)
    }
  }

  private render(overview: ILocalOverview): void {
    clear(this.list);
    const head = h(
      'tr',
      {},
      ['Model', 'Size', 'Quant', 'Params', 'Context', 'RAM est.', 'Last used', ''].map(text =>
        h('th', { scope: 'col', text })
      )
    );
    const rows = overview.models.flatMap(model => this.renderRow(model));
    this.list.appendChild(
      h(
        'div',
        { class: 'jp-byok-table-wrap' },
        h('table', { class: 'jp-byok-table jp-byok-local-table' }, h('thead', {}, head), h('tbody', {}, rows))
      )
    );
  }

  private renderRow(model: ILocalModel): HTMLElement[] {
    const label = h(
      'td',
      { class: 'jp-byok-local-model' },
      h('strong', { text: `local:${model.name}` }),
      model.default ? h('span', { class: 'jp-byok-badge jp-byok-ok', text: 'default' }) : null,
      model.exists ? null : h('span', { class: 'jp-byok-badge', text: 'missing' }),
      h('div', {
        class: 'jp-byok-muted',
        text: [model.architecture, model.repo ?? model.source, model.chat_template === false ? 'no chat template' : '']
          .filter(Boolean)
          .join(' · ')
      })
    );
    const actions = h(
      'td',
      { class: 'jp-byok-local-actions' },
      h('button', {
        type: 'button',
        class: 'jp-mod-styled jp-byok-small',
        text: 'Test',
        'aria-label': `Test local:${model.name}`,
        disabled: !model.exists,
        onclick: (event: Event) => void this.test(model, event.currentTarget as HTMLButtonElement)
      }),
      model.default
        ? null
        : h('button', {
            type: 'button',
            class: 'jp-mod-styled jp-byok-small',
            text: 'Set default',
            'aria-label': `Make local:${model.name} the default local model`,
            onclick: () => void this.setDefault(model)
          }),
      model.source === 'embedded'
        ? null
        : h('button', {
            type: 'button',
            class: 'jp-mod-styled jp-byok-small',
            text: 'Remove',
            'aria-label': `Remove local:${model.name}`,
            onclick: () => void this.remove(model)
          })
    );
    const row = h(
      'tr',
      { 'data-model': model.name },
      label,
      h('td', { text: formatBytes(model.size_bytes) }),
      h('td', { text: model.quantization ?? '–' }),
      h('td', { text: formatCount(model.parameters) }),
      h('td', { text: model.context_length ? String(model.context_length) : '–' }),
      h('td', { text: formatBytes(model.ram_estimate_bytes) }),
      h('td', { text: model.last_used ? model.last_used.slice(0, 16).replace('T', ' ') : 'never' }),
      actions
    );
    const rows = [row];
    const tested = this.tests.get(model.name);
    if (tested) {
      rows.push(
        h(
          'tr',
          { class: 'jp-byok-local-test', 'data-test-of': model.name },
          h('td', { colspan: '8', class: 'jp-byok-verify', text: tested })
        )
      );
    }
    return rows;
  }

  private async pull(): Promise<void> {
    const spec = this.spec.value.trim();
    if (!spec || this.job) {
      return;
    }
    this.status.textContent = '';
    this.status.classList.remove('jp-byok-error');
    try {
      const name = this.name.value.trim();
      const job = await api.pullModel(name ? { spec, name } : { spec });
      await this.follow(job);
    } catch (error) {
      this.showError(messageOf(error));
    }
  }

  /** Show a running pull's progress until it ends, then the outcome. */
  private async follow(job: IPullJob): Promise<void> {
    this.job = job;
    this.pullButton.disabled = true;
    const bar = h('progress', {
      class: 'jp-byok-local-progress',
      max: '1',
      value: '0',
      'aria-label': `Pulling ${job.spec}`
    });
    const text = h('span', { class: 'jp-byok-local-progress-text', text: 'Starting…' });
    const cancel = h('button', {
      type: 'button',
      class: 'jp-mod-styled jp-byok-small',
      text: 'Cancel',
      'aria-label': 'Cancel the pull',
      onclick: () => {
        cancel.disabled = true;
        void api.cancelPull(job.id).catch(() => undefined);
      }
    });
    clear(this.pulling);
    this.pulling.append(h('div', { class: 'jp-byok-muted', text: job.spec }), bar, text, cancel);
    this.pulling.hidden = false;
    try {
      while (job.state === 'running') {
        const total = job.progress.total_bytes ?? 0;
        if (total > 0) {
          bar.max = total;
          bar.value = job.progress.done_bytes ?? 0;
          text.textContent = progressText(job);
        }
        await new Promise(resolve => setTimeout(resolve, POLL_MS));
        job = await api.pullStatus(job.id);
      }
    } catch (error) {
      this.showError(messageOf(error));
      job = { ...job, state: 'error' };
    } finally {
      this.job = null;
      this.pullButton.disabled = false;
      this.pulling.hidden = true;
      clear(this.pulling);
    }
    if (job.state === 'done' && job.result) {
      this.status.textContent = job.result.message;
      this.spec.value = '';
      this.name.value = '';
      this.onChange();
    } else if (job.error) {
      this.showError(job.error);
    }
    await this.refresh().catch(() => undefined);
  }

  private showError(message: string): void {
    this.status.textContent = message;
    this.status.classList.add('jp-byok-error');
  }

  private async test(model: ILocalModel, button: HTMLButtonElement): Promise<void> {
    button.disabled = true;
    button.textContent = 'Testing…';
    try {
      const report = await api.testLocal(model.name);
      this.tests.set(
        model.name,
        `\u201c${report.text}\u201d · ${report.output_tokens} tokens at ${report.tokens_per_s} tokens/s ` +
          `(first token after ${report.first_token_s} s)`
      );
    } catch (error) {
      this.tests.set(model.name, `Test failed: ${messageOf(error)}`);
    }
    await this.refresh().catch(() => undefined);
  }

  private async setDefault(model: ILocalModel): Promise<void> {
    try {
      const done = await api.setLocalDefault(model.name);
      this.status.classList.remove('jp-byok-error');
      this.status.textContent = done.message;
      await this.refresh();
      this.onChange();
    } catch (error) {
      await showErrorMessage('Could not set the default local model', messageOf(error));
    }
  }

  private async remove(model: ILocalModel): Promise<void> {
    const file = model.downloaded
      ? `Its file (${formatBytes(model.size_bytes)}) was downloaded by jupyter_byok and will be deleted.`
      : 'Its file was not downloaded by jupyter_byok and is kept.';
    const result = await showDialog({
      title: 'Remove local model?',
      body: `Remove local:${model.name}? ${file}`,
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Remove' })]
    });
    if (!result.button.accept) {
      return;
    }
    try {
      const done = await api.removeLocal(model.name);
      this.tests.delete(model.name);
      this.status.classList.remove('jp-byok-error');
      this.status.textContent = done.message;
      await this.refresh();
      this.onChange();
    } catch (error) {
      await showErrorMessage('Could not remove the model', messageOf(error));
    }
  }
}
