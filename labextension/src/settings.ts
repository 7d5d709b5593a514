/**
 * The settings editor's "Default model" field offers the models a user can pick (local
 * models, registered and pulled, then the priced cloud models and the aliases), as the
 * `%%byok` completion does. They are the field's JSON-schema `examples`, which the editor
 * shows as a suggestion list while any other `provider:model` may still be typed.
 */
import { ISettingRegistry } from '@jupyterlab/settingregistry';

/** ``plugin`` with ``choices`` as the suggestions of its ``defaultModel`` field. */
export function withModelChoices(
  plugin: ISettingRegistry.IPlugin,
  choices: readonly string[]
): ISettingRegistry.IPlugin {
  const field = plugin.schema.properties?.defaultModel;
  if (!field || choices.length === 0) {
    return plugin;
  }
  const properties = {
    ...plugin.schema.properties,
    defaultModel: { ...field, examples: [...new Set(choices)] }
  };
  return { ...plugin, schema: { ...plugin.schema, properties } };
}
