/** Pure formatting for the Batches section (no JupyterLab imports: unit-tested with Jest). */
import { IBatch } from './api';

const ENDED = new Set(['completed', 'expired', 'cancelled', 'failed']);

/** Whether a batch may still change (its results are not in the ledger yet). */
export function inFlight(batch: IBatch): boolean {
  return !batch.fetched && !ENDED.has(batch.state);
}

/** "412 of 1,000 done, 3 failed" */
export function countsText(batch: IBatch): string {
  const done = `${batch.done.toLocaleString('en-US')} of ${batch.total.toLocaleString('en-US')} done`;
  return batch.failed ? `${done}, ${batch.failed.toLocaleString('en-US')} failed` : done;
}

/** The submission time as "YYYY-MM-DD HH:MM" UTC. */
export function createdText(batch: IBatch): string {
  return new Date(batch.created / 1000).toISOString().slice(0, 16).replace('T', ' ');
}
