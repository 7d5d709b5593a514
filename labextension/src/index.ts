import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';

import { IStatus, requestAPI } from './api';

export const PLUGIN_ID = 'jupyter_byok:plugin';

/**
 * The jupyter_byok front end. This first plugin checks that the server half answers;
 * the keys panel, usage dashboard and status bar build on it.
 */
const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Bring your own key AI: keys, usage and budgets.',
  autoStart: true,
  activate: (app: JupyterFrontEnd) => {
    document.body.dataset.byokActivated = 'true';
    console.log('jupyter_byok extension activated');
    requestAPI<IStatus>('status')
      .then(status => {
        document.body.dataset.byokTier = status.keystore.tier;
        console.log(`jupyter_byok server ${status.version}, keystore tier ${status.keystore.tier}`);
      })
      .catch(reason => {
        console.error(`jupyter_byok: ${reason}`);
      });
  }
};

export default plugin;
