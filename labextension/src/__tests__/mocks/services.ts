/**
 * Stand-in for @jupyterlab/services' ServerConnection: tests script what makeRequest answers
 * (a Response, or a thrown network error) and read back what was requested.
 */
export interface ICall {
  url: string;
  init: RequestInit;
}

export const calls: ICall[] = [];
let next: () => Promise<Response> = () => Promise.resolve(new Response('{}'));

export function answer(status: number, body: unknown, statusText = ''): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  next = () =>
    Promise.resolve(new Response(status === 204 ? null : text, { status, statusText }));
}

export function fail(error: Error): void {
  next = () => Promise.reject(error);
}

export namespace ServerConnection {
  export interface ISettings {
    baseUrl: string;
  }
  export function makeSettings(): ISettings {
    return { baseUrl: 'http://127.0.0.1:8888/lab-base/' };
  }
  export function makeRequest(url: string, init: RequestInit, _settings: ISettings): Promise<Response> {
    calls.push({ url, init });
    return next();
  }
}
