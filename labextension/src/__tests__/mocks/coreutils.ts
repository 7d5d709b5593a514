/** Stand-in for @jupyterlab/coreutils: only URLExt.join is used by api.ts. */
export const URLExt = {
  join: (...parts: string[]): string =>
    parts
      .filter(p => p !== '')
      .map((p, i) => (i === 0 ? p.replace(/\/+$/, '') : p.replace(/^\/+|\/+$/g, '')))
      .join('/')
};
