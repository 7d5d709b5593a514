import { describeRestore, IRestoreReport } from '../backup';

const none = { added: 0, same: 0, conflict: 0, replaced: 0, conflicts: [] };

describe('describeRestore', () => {
  it('says what a restore did, kind by kind, naming the items kept as they were', () => {
    const report: IRestoreReport = {
      source: { machine: 'laptop', created: '2026-01-01T00:00:00+00:00' },
      keys: { added: 3, same: 1, conflict: 1, replaced: 0, conflicts: ['openai'] },
      settings: none,
      budgets: { ...none, replaced: 2 },
      prices: 'added',
      local_registry: null,
      model_files: {},
      ledger: { added: 120, present: 7 }
    };
    expect(describeRestore(report)).toEqual([
      'Keys: 3 added, 1 already here, 1 kept as here (openai)',
      'Settings: none',
      'Budgets: 2 replaced',
      'Ledger rows: 120 added, 7 already here',
      'Price overrides: added'
    ]);
  });
});
