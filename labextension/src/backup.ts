/**
 * The Backup & restore section at the foot of the BYOK panel.
 *
 * "Back up…" asks for a passphrase twice, then downloads the sealed file
 * (POST /byok/backup). "Restore…" picks a file, uploads it (POST /byok/restore/upload),
 * then asks for its passphrase and merges it (POST /byok/restore), showing the counts.
 * The passphrase goes only into those POST bodies; no key ever reaches the browser
 * (the downloaded file holds them sealed).
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { clear, h, uid } from './dom';
import { errorFromResponse, messageOf, networkError, parseBody } from './errors';

/** What POST /byok/restore/upload answers: the id POST /byok/restore takes. */
export interface IUploaded {
  upload: string;
  bytes: number;
}

/** What POST /byok/restore answers (counts per kind). */
export interface IMergeCounts {
  added: number;
  same: number;
  conflict: number;
  replaced: number;
  conflicts: string[];
}

export interface IRestoreReport {
  source: { machine: string | null; created: string | null; jupyter_byok?: string | null };
  keys: IMergeCounts;
  settings: IMergeCounts;
  budgets: IMergeCounts;
  prices: string | null;
  local_registry: string | null;
  model_files: Record<string, number>;
  ledger: { added: number; present: number };
}

/** One line per kind, e.g. "Keys: 3 added, 1 kept as here (openai)". */
export function describeRestore(report: IRestoreReport): string[] {
  const counts = (label: string, c: IMergeCounts): string => {
    const parts: string[] = [];
    if (c.added) {
      parts.push(`${c.added} added`);
    }
    if (c.replaced) {
      parts.push(`${c.replaced} replaced`);
    }
    if (c.same) {
      parts.push(`${c.same} already here`);
    }
    if (c.conflict) {
      parts.push(`${c.conflict} kept as here (${c.conflicts.join(', ')})`);
    }
    return `${label}: ${parts.length ? parts.join(', ') : 'none'}`;
  };
  const lines = [
    counts('Keys', report.keys),
    counts('Settings', report.settings),
    counts('Budgets', report.budgets),
    `Ledger rows: ${report.ledger.added} added, ${report.ledger.present} already here`
  ];
  if (report.prices) {
    lines.push(`Price overrides: ${report.prices}`);
  }
  return lines;
}

async function send(path: string, init: RequestInit): Promise<Response> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'byok', path);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, { cache: 'no-cache', ...init }, settings);
  } catch (error) {
    throw networkError(error);
  }
  if (!response.ok) {
    throw errorFromResponse(response.status, response.statusText, parseBody(await response.text()));
  }
  return response;
}

function postJSON(path: string, body: unknown): Promise<Response> {
  return send(path, {
    method: 'POST',
    body: JSON.stringify(body),
    headers: { 'Content-Type': 'application/json' }
  });
}

function passwordInput(id: string, label: string): HTMLInputElement {
  return h('input', {
    id,
    type: 'password',
    required: true,
    'aria-label': label,
    autocomplete: 'new-password',
    spellcheck: 'false',
    'data-lpignore': 'true',
    'data-1p-ignore': 'true'
  });
}

export class BackupSection {
  readonly node: HTMLElement;
  private status: HTMLElement;
  private backupForm: HTMLFormElement;
  private restoreForm: HTMLFormElement;
  private pass: HTMLInputElement;
  private again: HTMLInputElement;
  private file: HTMLInputElement;
  private restorePass: HTMLInputElement;
  private replace: HTMLInputElement;
  private fileLabel: HTMLElement;
  private upload: string | null = null;

  constructor(private readonly onChange: () => void) {
    const passId = uid('byok-backup-pass');
    const againId = uid('byok-backup-again');
    const restoreId = uid('byok-restore-pass');
    const replaceId = uid('byok-restore-replace');
    this.pass = passwordInput(passId, 'Backup passphrase');
    this.again = passwordInput(againId, 'Backup passphrase again');
    this.restorePass = passwordInput(restoreId, 'Passphrase of the backup');
    this.replace = h('input', { id: replaceId, type: 'checkbox', 'aria-label': 'Replace' });
    this.status = h('div', {
      class: 'jp-byok-backup-status',
      'data-testid': 'byok-backup-status',
      role: 'status',
      'aria-live': 'polite'
    });
    this.file = h('input', {
      type: 'file',
      accept: '.byokbak,application/octet-stream',
      hidden: true,
      'aria-label': 'Backup file',
      'data-testid': 'byok-restore-file',
      onchange: () => void this.uploadChosen()
    });
    this.fileLabel = h('p', { class: 'jp-byok-hint' });
    this.backupForm = h(
      'form',
      {
        class: 'jp-byok-form',
        'aria-label': 'Back up',
        hidden: true,
        onsubmit: (event: Event) => {
          event.preventDefault();
          void this.backup();
        }
      },
      h('h4', { text: 'Back up keys, ledger and settings' }),
      h('label', { for: passId, text: 'Passphrase' }),
      this.pass,
      h('label', { for: againId, text: 'Again' }),
      this.again,
      h(
        'div',
        { class: 'jp-byok-form-actions' },
        h('button', {
          type: 'submit',
          class: 'jp-mod-styled jp-mod-accept jp-byok-primary',
          text: 'Download backup',
          'aria-label': 'Download backup'
        }),
        h('button', {
          type: 'button',
          class: 'jp-mod-styled jp-mod-reject',
          text: 'Cancel',
          onclick: () => this.closeForms()
        })
      ),
      h('p', {
        class: 'jp-byok-hint',
        text:
          'The keys in the file are encrypted with this passphrase: without it the backup ' +
          'cannot be opened. Use 4 or more random words.'
      })
    );
    this.restoreForm = h(
      'form',
      {
        class: 'jp-byok-form',
        'aria-label': 'Restore',
        hidden: true,
        onsubmit: (event: Event) => {
          event.preventDefault();
          void this.restore();
        }
      },
      h('h4', { text: 'Restore a backup' }),
      this.fileLabel,
      h('label', { for: restoreId, text: 'Passphrase' }),
      this.restorePass,
      h('label', { for: replaceId, text: 'Replace' }),
      h(
        'span',
        {},
        this.replace,
        h('span', { class: 'jp-byok-hint', text: ' take the backup’s value where this machine differs' })
      ),
      h(
        'div',
        { class: 'jp-byok-form-actions' },
        h('button', {
          type: 'submit',
          class: 'jp-mod-styled jp-mod-accept jp-byok-primary',
          text: 'Restore',
          'aria-label': 'Restore backup'
        }),
        h('button', {
          type: 'button',
          class: 'jp-mod-styled jp-mod-reject',
          text: 'Cancel',
          onclick: () => this.closeForms()
        })
      )
    );
    this.node = h(
      'section',
      { class: 'jp-byok-section jp-byok-backup', 'aria-label': 'Backup and restore' },
      h('h4', { text: 'Backup & restore' }),
      h(
        'div',
        { class: 'jp-byok-form-actions' },
        h('button', {
          type: 'button',
          class: 'jp-mod-styled jp-byok-small',
          text: 'Back up…',
          'aria-label': 'Back up…',
          onclick: () => this.openBackup()
        }),
        h('button', {
          type: 'button',
          class: 'jp-mod-styled jp-byok-small',
          text: 'Restore…',
          'aria-label': 'Restore…',
          onclick: () => this.file.click()
        })
      ),
      this.file,
      this.backupForm,
      this.restoreForm,
      this.status
    );
  }

  private say(text: string | string[], error = false): void {
    clear(this.status);
    this.status.classList.toggle('jp-byok-error', error);
    this.status.setAttribute('role', error ? 'alert' : 'status');
    for (const line of Array.isArray(text) ? text : [text]) {
      this.status.appendChild(h('div', { text: line }));
    }
  }

  private closeForms(): void {
    this.backupForm.hidden = true;
    this.restoreForm.hidden = true;
    this.pass.value = '';
    this.again.value = '';
    this.restorePass.value = '';
    this.replace.checked = false;
    this.file.value = '';
  }

  private openBackup(): void {
    this.closeForms();
    this.backupForm.hidden = false;
    this.pass.focus();
  }

  private async backup(): Promise<void> {
    const passphrase = this.pass.value;
    if (!passphrase.trim()) {
      this.say('Enter a passphrase.', true);
      return;
    }
    if (passphrase !== this.again.value) {
      this.say('The two passphrases differ.', true);
      return;
    }
    this.say('Writing the backup…');
    try {
      const response = await postJSON('backup', { passphrase });
      const blob = await response.blob();
      const disposition = response.headers.get('Content-Disposition') || '';
      const name = /filename="([^"]+)"/.exec(disposition)?.[1] || 'byok.byokbak';
      const url = URL.createObjectURL(blob);
      const link = h('a', { href: url, download: name, hidden: true });
      document.body.appendChild(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
      const lines = [`Backup downloaded as ${name} (${response.headers.get('X-Byok-Backup') || ''}).`];
      const warning = response.headers.get('X-Byok-Warning');
      if (warning) {
        lines.push(`Warning: ${warning}`);
      }
      this.closeForms();
      this.say(lines);
    } catch (error) {
      this.say(messageOf(error), true);
    }
  }

  private async uploadChosen(): Promise<void> {
    const chosen = this.file.files?.[0];
    if (!chosen) {
      return;
    }
    this.backupForm.hidden = true;
    this.restoreForm.hidden = true;
    this.say(`Uploading ${chosen.name}…`);
    try {
      const response = await send('restore/upload', {
        method: 'POST',
        body: chosen,
        headers: { 'Content-Type': 'application/octet-stream' }
      });
      this.upload = ((await response.json()) as IUploaded).upload;
      this.fileLabel.textContent = `${chosen.name}: enter the passphrase it was made with.`;
      this.restoreForm.hidden = false;
      this.say('');
      this.restorePass.focus();
    } catch (error) {
      this.say(messageOf(error), true);
    }
  }

  private async restore(): Promise<void> {
    if (!this.upload) {
      this.say('Choose a backup file first.', true);
      return;
    }
    this.say('Checking the backup…');
    try {
      const response = await postJSON('restore', {
        upload: this.upload,
        passphrase: this.restorePass.value,
        replace: this.replace.checked
      });
      const report = (await response.json()) as IRestoreReport;
      this.upload = null;
      this.closeForms();
      const from = report.source.machine ? ` (made on ${report.source.machine})` : '';
      this.say([`Restored${from}.`, ...describeRestore(report)]);
      this.onChange();
    } catch (error) {
      this.restorePass.value = '';
      this.say(messageOf(error), true);
    }
  }
}
