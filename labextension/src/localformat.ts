/** Pure formatting for the "Local models" section (no JupyterLab imports: unit-tested). */
import { IPullJob } from './api';

/** 1536 -> "1.5 KiB"; binary units, as `jupyter byok local list` prints them. */
export function formatBytes(value: number | null | undefined): string {
  if (value === null || value === undefined || !Number.isFinite(value)) {
    return '–';
  }
  let size = value;
  for (const unit of ['B', 'KiB', 'MiB', 'GiB']) {
    if (size < 1024 || unit === 'GiB') {
      return unit === 'B' ? `${Math.round(size)} B` : `${size.toFixed(1)} ${unit}`;
    }
    size /= 1024;
  }
  return `${size.toFixed(1)} GiB`;
}

/** 134515008 -> "135M"; 1.5e9 -> "1.5B". */
export function formatCount(value: number | null | undefined): string {
  if (!value || value <= 0) {
    return '–';
  }
  for (const [unit, scale] of [
    ['B', 1e9],
    ['M', 1e6],
    ['K', 1e3]
  ] as Array<[string, number]>) {
    if (value >= scale) {
      return `${(value / scale).toFixed(value < 10 * scale ? 1 : 0)}${unit}`;
    }
  }
  return String(value);
}

/** "12.0 MiB of 93.8 MiB · 40.0 MiB/s · 2 s left" */
export function progressText(job: IPullJob): string {
  const p = job.progress;
  if (p.phase === 'verify') {
    return `Verifying ${p.filename ?? ''}…`;
  }
  const parts = [`${formatBytes(p.done_bytes ?? 0)} of ${formatBytes(p.total_bytes ?? 0)}`];
  if (p.speed_bps) {
    parts.push(`${formatBytes(p.speed_bps)}/s`);
  }
  if (p.eta_s !== null && p.eta_s !== undefined && Number.isFinite(p.eta_s)) {
    parts.push(`${Math.max(0, Math.ceil(p.eta_s))} s left`);
  }
  return parts.join(' · ');
}
