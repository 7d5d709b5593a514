import { countsText, createdText, inFlight } from '../batchformat';
import { IBatch } from '../api';

function batch(extra: Partial<IBatch>): IBatch {
  return {
    id: '019abc',
    fingerprint: 'f',
    part: 0,
    pipeline: 'tickets',
    node: 'summary',
    notebook: null,
    provider: 'openai',
    model: 'gpt-4o-mini',
    key_name: 'default',
    provider_batch_id: 'batch_1',
    state: 'in_progress',
    total: 10000,
    done: 412,
    failed: 0,
    created: Date.UTC(2026, 11, 3, 16, 5) * 1000,
    updated: 0,
    fetched: 0,
    message: null,
    ...extra
  };
}

describe('batches formatting', () => {
  it('counts items', () => {
    expect(countsText(batch({}))).toBe('412 of 10,000 done');
    expect(countsText(batch({ failed: 3 }))).toBe('412 of 10,000 done, 3 failed');
  });

  it('shows the submission time in UTC', () => {
    expect(createdText(batch({}))).toBe('2026-12-03 16:05');
  });

  it('offers Status and Cancel only while a batch may still change', () => {
    expect(inFlight(batch({}))).toBe(true);
    expect(inFlight(batch({ state: 'completed' }))).toBe(false);
    expect(inFlight(batch({ state: 'cancelling', fetched: 1 }))).toBe(false);
  });
});
