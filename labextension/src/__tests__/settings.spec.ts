import { ISettingRegistry } from '@jupyterlab/settingregistry';

import { withModelChoices } from '../settings';

const schema = require('../../schema/plugin.json');

function plugin(): ISettingRegistry.IPlugin {
  return {
    id: 'jupyter_byok:plugin',
    raw: '{}',
    data: { composite: {}, user: {} },
    version: '0',
    schema: JSON.parse(JSON.stringify(schema))
  };
}

describe('withModelChoices', () => {
  it('offers the model ids as suggestions of the default-model field', () => {
    const original = plugin();
    const out = withModelChoices(original, [
      'local:smollm2',
      'local:qwen',
      'openai:gpt-4o-mini',
      'local:qwen'
    ]);
    expect(out.schema.properties?.defaultModel.examples).toEqual([
      'local:smollm2',
      'local:qwen',
      'openai:gpt-4o-mini'
    ]);
    // still free text within the pattern, and the loaded schema is not changed in place
    expect(out.schema.properties?.defaultModel.type).toBe('string');
    expect(out.schema.properties?.defaultModel.pattern).toBe(schema.properties.defaultModel.pattern);
    expect(original.schema.properties?.defaultModel.examples).toBeUndefined();
    expect(out.schema.properties?.showStatusBar).toEqual(schema.properties.showStatusBar);
  });

  it('leaves the schema alone when there is nothing to offer', () => {
    const original = plugin();
    expect(withModelChoices(original, [])).toBe(original);
  });
});
