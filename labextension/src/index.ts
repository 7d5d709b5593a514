/**
 * jupyter_byok front end: the BYOK sidebar (keys, usage and cost, budgets), today's spend in
 * the status bar, palette commands and settings. Activation does not wait on the server, so
 * JupyterLab's start is never delayed by it.
 */
import {
  ILabShell,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, IThemeManager, Notification } from '@jupyterlab/apputils';
import { NotebookActions } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';

import { api } from './api';
import { messageOf } from './errors';
import { KEYS_CHANGED_EVENT } from './keyform';
import { ByokPanel, byokIcon, TabName } from './panel';
import { withModelChoices } from './settings';
import { SpendModel, SpendStatus } from './statusbar';

export const PLUGIN_ID = 'jupyter_byok:plugin';

export namespace CommandIDs {
  export const openPanel = 'byok:open-panel';
  export const addKey = 'byok:add-key';
  export const openUsage = 'byok:open-usage';
  export const openBudgets = 'byok:open-budgets';
}

interface ISettings {
  showStatusBar: boolean;
  refreshInterval: number;
  defaultModel: string;
}

const DEFAULTS: ISettings = { showStatusBar: true, refreshInterval: 30, defaultModel: '' };

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Bring your own key AI: keys, usage and cost, budgets and status-bar spend.',
  autoStart: true,
  optional: [ICommandPalette, IStatusBar, ISettingRegistry, IThemeManager, ILabShell],
  activate: (
    app: JupyterFrontEnd,
    palette: ICommandPalette | null,
    statusBar: IStatusBar | null,
    registry: ISettingRegistry | null,
    themes: IThemeManager | null
  ) => {
    const settings: ISettings = { ...DEFAULTS };
    const model = new SpendModel(settings.refreshInterval);
    const panel = new ByokPanel(() => void model.refresh());
    app.shell.add(panel, 'left', { rank: 850, type: 'BYOK' });

    const open = (tab: TabName) => {
      panel.select(tab, false);
      app.shell.activateById(panel.id);
    };

    app.commands.addCommand(CommandIDs.openPanel, {
      label: 'BYOK: Open Keys, Usage and Budgets',
      caption: 'Open the BYOK sidebar',
      icon: byokIcon,
      execute: () => app.shell.activateById(panel.id)
    });
    app.commands.addCommand(CommandIDs.addKey, {
      label: 'BYOK: Add an API Key',
      caption: 'Store a provider key in the encrypted keystore',
      execute: () => {
        open('keys');
        panel.focusAddKey();
      }
    });
    app.commands.addCommand(CommandIDs.openUsage, {
      label: 'BYOK: Open Usage & Cost',
      caption: 'Spending by provider, model, feature and notebook',
      execute: () => open('usage')
    });
    app.commands.addCommand(CommandIDs.openBudgets, {
      label: 'BYOK: Open Budgets',
      caption: 'View and edit spend limits',
      execute: () => open('budgets')
    });
    if (palette) {
      for (const command of Object.values(CommandIDs)) {
        palette.addItem({ command, category: 'BYOK' });
      }
    }

    if (statusBar) {
      const item = new SpendStatus(model, () => void app.commands.execute(CommandIDs.openUsage));
      statusBar.registerStatusItem('jupyter_byok:spend', {
        item,
        align: 'left',
        rank: 900,
        isActive: () => settings.showStatusBar,
        activeStateChanged: model.changed
      });
    }

    // A call shows up in the ledger by the time its cell finishes: refresh right away.
    NotebookActions.executed.connect(() => {
      void model.refresh();
    });
    model.changed.connect(() => panel.refreshVisible());
    // A key stored from a notebook's key form (`%byok keys set`, mime.ts) shows in the panel.
    document.addEventListener(KEYS_CHANGED_EVENT, () => panel.refreshVisible());
    themes?.themeChanged.connect(() => panel.usage.redraw());

    const apply = (loaded: ISettingRegistry.ISettings) => {
      const previousInterval = settings.refreshInterval;
      const composite = loaded.composite as unknown as Partial<ISettings>;
      settings.showStatusBar = composite.showStatusBar ?? DEFAULTS.showStatusBar;
      settings.refreshInterval = Math.max(5, composite.refreshInterval ?? DEFAULTS.refreshInterval);
      const defaultModel = (composite.defaultModel ?? '').trim();
      if (settings.refreshInterval !== previousInterval) {
        model.setInterval(settings.refreshInterval);
      }
      // The status bar re-checks isActive when this signal fires.
      model.notify();
      if (defaultModel && defaultModel !== settings.defaultModel) {
        settings.defaultModel = defaultModel;
        api
          .config()
          .then(config =>
            config.default_model === defaultModel
              ? config
              : api.setConfig({ default_model: defaultModel })
          )
          .catch(error =>
            Notification.error(`BYOK: could not set the default model: ${messageOf(error)}`, {
              autoClose: 8000
            })
          );
      }
      settings.defaultModel = defaultModel;
    };
    if (registry) {
      // The default-model field suggests the models a user can pick (as %%byok completes
      // them); they arrive from the server after activation, then the schema is reloaded.
      let choices: string[] = [];
      registry.transform(PLUGIN_ID, { fetch: loaded => withModelChoices(loaded, choices) });
      void registry
        .load(PLUGIN_ID)
        .then(loaded => {
          apply(loaded);
          loaded.changed.connect(apply);
        })
        .catch(error => console.warn(`jupyter_byok: settings not loaded: ${messageOf(error)}`));
      api
        .models()
        .then(models => {
          choices = models.choices ?? [];
          return choices.length ? registry.reload(PLUGIN_ID) : undefined;
        })
        .catch(error => console.warn(`jupyter_byok: no model choices: ${messageOf(error)}`));
    }

    model.start();
    // A hook for browser tests and for users checking that the front end loaded.
    document.body.dataset.byokActivated = 'true';
    api
      .status()
      .then(status => {
        document.body.dataset.byokTier = status.keystore.tier;
      })
      .catch(error => {
        document.body.dataset.byokServer = 'missing';
        console.error(`jupyter_byok: ${messageOf(error)}`);
      });
  }
};

export default plugin;
