/** A tiny element builder: the panel is plain DOM inside Lumino widgets (no React needed). */

type Child = Node | string | number | null | undefined | false;
type Attrs = Record<string, unknown>;

const PROPERTIES = new Set(['value', 'checked', 'disabled', 'selected', 'hidden', 'tabIndex']);

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: Array<Child | Child[]>
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) {
      continue;
    }
    if (name.startsWith('on') && typeof value === 'function') {
      el.addEventListener(name.slice(2).toLowerCase(), value as EventListener);
    } else if (name === 'class') {
      el.className = String(value);
    } else if (name === 'text') {
      el.textContent = String(value);
    } else if (PROPERTIES.has(name)) {
      (el as any)[name] = value;
    } else {
      el.setAttribute(name, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

export function append(el: Element, children: Array<Child | Child[]>): void {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) {
      continue;
    }
    el.appendChild(typeof child === 'object' ? child : document.createTextNode(String(child)));
  }
}

export function clear(el: Element): void {
  while (el.firstChild) {
    el.removeChild(el.firstChild);
  }
}

/** An `<option>` list for a `<select>`. */
export function options(values: Array<[string, string]>, selected?: string): HTMLOptionElement[] {
  return values.map(([value, label]) =>
    h('option', { value, selected: value === selected, text: label })
  );
}

let counter = 0;
/** A unique element id, for label `for=` and aria-describedby. */
export function uid(prefix: string): string {
  counter += 1;
  return `${prefix}-${counter}`;
}
