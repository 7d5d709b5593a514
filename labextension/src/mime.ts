/**
 * The renderer of `%byok keys set`'s key form (`application/vnd.jupyter.byok.keyform+json`),
 * registered as this package's `mimeExtension` (see package.json).
 *
 * A mime extension, not a plugin calling `IRenderMimeRegistry.addFactory`: JupyterLab (and
 * Notebook 7) add mime extensions to the application's registry before any document opens,
 * so every notebook, including one restored with the page, clones a registry that has the
 * factory; it needs no plugin activation order and no runtime dependency.
 *
 * The factory is not "safe": in an untrusted notebook (someone else's file) JupyterLab shows
 * the bundle's `text/plain` fallback instead of a form that posts to the user's keystore.
 * The key typed in goes from the password field straight to `POST /byok/keys`; the field is
 * emptied before the request resolves and nothing writes it to the output model.
 */
import type { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { Widget } from '@lumino/widgets';

import { api } from './api';
import { clear, h, uid } from './dom';
import {
  IKeyFormData,
  KEYFORM_MIME,
  KEYS_CHANGED_EVENT,
  parseKeyForm,
  saveKey
} from './keyform';

export class KeyFormRenderer extends Widget implements IRenderMime.IRenderer {
  private rendered: string | null = null;

  constructor() {
    super();
    this.addClass('jp-byok-keyform');
  }

  renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    const raw = model.data[KEYFORM_MIME];
    const signature = JSON.stringify(raw ?? null);
    // Rebuilding on an unchanged model would drop what is being typed.
    if (signature === this.rendered) {
      return Promise.resolve();
    }
    this.rendered = signature;
    clear(this.node);
    const data = parseKeyForm(raw);
    this.node.appendChild(
      typeof data === 'string'
        ? h('p', { class: 'jp-byok-keyform-status jp-byok-error', role: 'alert', text: data })
        : this.form(data)
    );
    return Promise.resolve();
  }

  private form(data: IKeyFormData): HTMLFormElement {
    const inputId = uid('byok-keyform-key');
    const hintId = uid('byok-keyform-hint');
    const secret = h('input', {
      id: inputId,
      type: 'password',
      name: 'byok-keyform-secret',
      class: 'jp-byok-keyform-input',
      required: true,
      placeholder: 'paste the key',
      autocomplete: 'new-password',
      spellcheck: 'false',
      'aria-describedby': hintId,
      'data-lpignore': 'true',
      'data-1p-ignore': 'true'
    });
    const save = h('button', {
      type: 'submit',
      class: 'jp-mod-styled jp-mod-accept jp-byok-keyform-save',
      text: 'Save',
      'aria-label': `Save the ${data.label} key`
    });
    const status = h('p', {
      class: 'jp-byok-keyform-status',
      role: 'status',
      'aria-live': 'polite'
    });
    const submit = async (): Promise<void> => {
      save.disabled = true;
      status.className = 'jp-byok-keyform-status';
      status.textContent = 'Saving…';
      const outcome = await saveKey(data, secret, api.addKey);
      save.disabled = false;
      status.className = `jp-byok-keyform-status ${outcome.ok ? 'jp-byok-ok-text' : 'jp-byok-error'}`;
      status.dataset.ok = String(outcome.ok);
      status.textContent = outcome.message;
      if (outcome.ok) {
        document.dispatchEvent(new CustomEvent(KEYS_CHANGED_EVENT));
      } else {
        secret.focus();
      }
    };
    return h(
      'form',
      {
        class: 'jp-byok-keyform-form',
        'aria-label': `Store the ${data.label} key`,
        autocomplete: 'off',
        'data-provider': data.provider,
        'data-name': data.name,
        onsubmit: (event: Event) => {
          event.preventDefault();
          void submit();
        }
      },
      h(
        'div',
        { class: 'jp-byok-keyform-row' },
        h('label', { for: inputId, class: 'jp-byok-keyform-label', text: `Key for ${data.label}` }),
        data.tier ? h('span', { class: 'jp-byok-badge', text: `${data.tier} tier` }) : null,
        secret,
        save
      ),
      status,
      h('p', {
        id: hintId,
        class: 'jp-byok-hint',
        text:
          "Sent from this page straight to your Jupyter server's encrypted keystore: " +
          'never to the kernel, never into the notebook.'
      })
    );
  }
}

const extension: IRenderMime.IExtension = {
  id: 'jupyter_byok:keyform',
  description: 'The key form of `%byok keys set`: keys go from the browser to the server.',
  rendererFactory: {
    safe: false,
    mimeTypes: [KEYFORM_MIME],
    createRenderer: () => new KeyFormRenderer()
  },
  rank: 0,
  dataType: 'json'
};

export default extension;
