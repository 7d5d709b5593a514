import { formatBytes, formatCount, progressText } from '../localformat';
import { IPullJob } from '../api';

function job(progress: IPullJob['progress']): IPullJob {
  return { id: 'a', spec: 'hf:o/r/f.gguf', state: 'running', progress, result: null, error: null, started: 0 };
}

describe('local models formatting', () => {
  it('formats sizes in binary units, as the CLI does', () => {
    expect(formatBytes(72)).toBe('72 B');
    expect(formatBytes(98362432)).toBe('93.8 MiB');
    expect(formatBytes(4.5 * 1024 ** 3)).toBe('4.5 GiB');
    expect(formatBytes(null)).toBe('–');
  });

  it('formats parameter counts', () => {
    expect(formatCount(134515008)).toBe('135M');
    expect(formatCount(1.5e9)).toBe('1.5B');
    expect(formatCount(7.24e9)).toBe('7.2B');
    expect(formatCount(0)).toBe('–');
  });

  it('describes a running pull: bytes, speed, time left; then verification', () => {
    expect(
      progressText(job({ done_bytes: 10 * 1024 ** 2, total_bytes: 98362432, speed_bps: 24 * 1024 ** 2, eta_s: 3.4 }))
    ).toBe('10.0 MiB of 93.8 MiB · 24.0 MiB/s · 4 s left');
    expect(progressText(job({ phase: 'verify', filename: 'f.gguf' }))).toBe('Verifying f.gguf…');
  });
});
