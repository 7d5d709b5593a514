/**
 * The BYOK sidebar: three tabs (Keys, Usage & Cost, Budgets) in one Lumino widget.
 * Tabs follow the WAI-ARIA tabs pattern (arrow keys, Home/End move between them).
 */
import { Notification } from '@jupyterlab/apputils';
import { LabIcon } from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import { BackupSection } from './backup';
import { BatchesSection } from './batches';
import { BudgetsSection } from './budgets';
import { h } from './dom';
import { messageOf } from './errors';
import { KeysSection } from './keys';
import { LocalSection } from './local';
import { UsageSection } from './usage';

export const PANEL_ID = 'jupyter-byok-panel';

export const byokIcon = new LabIcon({
  name: 'jupyter_byok:key',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" width="16" viewBox="0 0 24 24">' +
    '<path class="jp-icon3" fill="#616161" d="M7 14a2 2 0 1 1 0-4 2 2 0 0 1 0 4zm5.65-4A6 6 0 1 0 ' +
    '12.65 14H17v4h4v-4h2v-4H12.65z"/></svg>'
});

export type TabName = 'keys' | 'usage' | 'budgets' | 'local' | 'batches';
const TABS: Array<[TabName, string]> = [
  ['keys', 'Keys'],
  ['usage', 'Usage & Cost'],
  ['budgets', 'Budgets'],
  ['local', 'Local models'],
  ['batches', 'Batches']
];

export class ByokPanel extends Widget {
  readonly keys: KeysSection;
  readonly usage: UsageSection;
  readonly budgets: BudgetsSection;
  readonly local: LocalSection;
  readonly batches: BatchesSection;
  readonly backup: BackupSection;
  private tabs = new Map<TabName, HTMLButtonElement>();
  private panels = new Map<TabName, HTMLElement>();
  private current: TabName = 'keys';
  private loaded = new Set<TabName>();

  constructor(private readonly onChange: () => void) {
    super();
    this.id = PANEL_ID;
    this.addClass('jp-byok-panel');
    this.title.icon = byokIcon;
    this.title.label = 'BYOK';
    this.title.caption = 'BYOK: keys, usage and budgets';
    this.keys = new KeysSection(() => this.changed());
    this.usage = new UsageSection();
    this.budgets = new BudgetsSection(() => this.changed());
    this.local = new LocalSection(() => this.changed());
    this.batches = new BatchesSection(() => this.changed());
    const sections: Record<TabName, HTMLElement> = {
      keys: this.keys.node,
      usage: this.usage.node,
      budgets: this.budgets.node,
      local: this.local.node,
      batches: this.batches.node
    };
    const list = h('div', {
      class: 'jp-byok-tabs',
      role: 'tablist',
      'aria-label': 'BYOK sections',
      onkeydown: (event: KeyboardEvent) => this.onTabKey(event)
    });
    for (const [name, label] of TABS) {
      const tabId = `jp-byok-tab-${name}`;
      const panelId = `jp-byok-tabpanel-${name}`;
      const tab = h('button', {
        type: 'button',
        id: tabId,
        role: 'tab',
        class: 'jp-byok-tab',
        'data-tab': name,
        'aria-controls': panelId,
        text: label,
        onclick: () => this.select(name, true)
      });
      this.tabs.set(name, tab);
      list.appendChild(tab);
      this.panels.set(
        name,
        h(
          'div',
          { id: panelId, role: 'tabpanel', class: 'jp-byok-tabpanel', 'aria-labelledby': tabId, 'data-tabpanel': name },
          sections[name]
        )
      );
    }
    this.node.appendChild(
      h('header', { class: 'jp-byok-header' }, h('h3', { text: 'Bring your own key' }), list)
    );
    for (const panel of this.panels.values()) {
      this.node.appendChild(panel);
    }
    // Backup & restore: below every tab (a change reloads keys, usage and budgets)
    this.backup = new BackupSection(() => {
      this.changed();
      this.refreshVisible();
    });
    this.node.appendChild(this.backup.node);
    this.select('keys', false);
  }

  get currentTab(): TabName {
    return this.current;
  }

  /** Show one tab; load its data the first time (and on every later explicit select). */
  select(name: TabName, focus: boolean): void {
    this.current = name;
    for (const [tabName, tab] of this.tabs) {
      const active = tabName === name;
      tab.setAttribute('aria-selected', String(active));
      tab.tabIndex = active ? 0 : -1;
      tab.classList.toggle('jp-mod-active', active);
      this.panels.get(tabName)!.hidden = !active;
    }
    if (focus) {
      this.tabs.get(name)!.focus();
    }
    if (this.isVisible) {
      void this.load(name);
    }
  }

  /** Reload whatever is on screen (after a call was made, or a key or budget changed). */
  refreshVisible(): void {
    if (this.isVisible) {
      void this.load(this.current, true);
    }
  }

  focusAddKey(): void {
    this.select('keys', false);
    this.keys.focusAdd();
  }

  private changed(): void {
    this.loaded.delete('usage');
    this.loaded.delete('budgets');
    this.onChange();
  }

  private async load(name: TabName, quiet = false): Promise<void> {
    try {
      if (name === 'keys') {
        await this.keys.refresh();
      } else if (name === 'usage') {
        await this.usage.refresh();
      } else if (name === 'local') {
        await this.local.refresh();
      } else if (name === 'batches') {
        await this.batches.refresh();
      } else {
        await this.budgets.refresh();
      }
      this.loaded.add(name);
    } catch (error) {
      if (!quiet) {
        Notification.error(`BYOK: ${messageOf(error)}`, { autoClose: 8000 });
      }
    }
  }

  private onTabKey(event: KeyboardEvent): void {
    const order = TABS.map(([name]) => name);
    const index = order.indexOf(this.current);
    let next: number | null = null;
    if (event.key === 'ArrowRight' || event.key === 'ArrowDown') {
      next = (index + 1) % order.length;
    } else if (event.key === 'ArrowLeft' || event.key === 'ArrowUp') {
      next = (index + order.length - 1) % order.length;
    } else if (event.key === 'Home') {
      next = 0;
    } else if (event.key === 'End') {
      next = order.length - 1;
    }
    if (next !== null) {
      event.preventDefault();
      this.select(order[next], true);
    }
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    void this.load(this.current, this.loaded.has(this.current));
  }

  protected onResize(msg: Widget.ResizeMessage): void {
    super.onResize(msg);
    if (this.current === 'usage') {
      this.usage.resize();
    }
  }
}
