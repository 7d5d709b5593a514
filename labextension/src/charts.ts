/**
 * Bar charts drawn with plotly.js (the basic bundle, loaded lazily so that JupyterLab's start
 * is not slowed down). Colours come from JupyterLab's --jp-* CSS variables, so the charts follow
 * the light and dark themes; callers redraw on theme change.
 */
import { formatUSD, IBar, shortLabel } from './transforms';

type PlotlyModule = {
  react: (el: HTMLElement, data: unknown[], layout: unknown, config: unknown) => Promise<unknown>;
  purge: (el: HTMLElement) => void;
  Plots: { resize: (el: HTMLElement) => void };
};

let plotly: Promise<PlotlyModule> | null = null;

export function loadPlotly(): Promise<PlotlyModule> {
  if (!plotly) {
    plotly = import(/* webpackChunkName: "byok-plotly" */ 'plotly.js-basic-dist-min').then(
      (mod: any) => (mod.default ?? mod) as PlotlyModule
    );
  }
  return plotly;
}

function cssVar(name: string, fallback: string): string {
  const value = getComputedStyle(document.body).getPropertyValue(name).trim();
  return value || fallback;
}

/** A text summary of a chart, for screen readers (aria-label) and as a fallback. */
export function describeBars(title: string, bars: IBar[]): string {
  if (!bars.length) {
    return `${title}: no calls in this range.`;
  }
  const parts = bars.map(
    b => `${b.label} ${formatUSD(b.cost)} (${b.calls} call${b.calls === 1 ? '' : 's'})`
  );
  return `${title}: ${parts.join('; ')}.`;
}

/** Draw (or redraw) a horizontal bar chart of cost per label into `el`. */
export async function drawBars(el: HTMLElement, title: string, bars: IBar[]): Promise<void> {
  el.setAttribute('role', 'img');
  el.setAttribute('aria-label', describeBars(title, bars));
  if (!bars.length) {
    const Plotly = plotly ? await plotly : null;
    Plotly?.purge(el);
    el.textContent = 'No calls in this range.';
    el.classList.add('jp-byok-chart-empty');
    return;
  }
  el.classList.remove('jp-byok-chart-empty');
  if (el.textContent && !el.querySelector('.plot-container')) {
    el.textContent = '';
  }
  const Plotly = await loadPlotly();
  const ordered = [...bars].reverse(); // Plotly draws the first category at the bottom
  const font = cssVar('--jp-ui-font-color1', '#333');
  const muted = cssVar('--jp-ui-font-color2', '#777');
  const grid = cssVar('--jp-border-color2', '#ddd');
  const bar = cssVar('--jp-brand-color1', '#1976d2');
  const family = cssVar('--jp-ui-font-family', 'sans-serif');
  const labels = ordered.map(b => shortLabel(b.label, 22));
  const longest = Math.max(...labels.map(l => l.length));
  const data = [
    {
      type: 'bar',
      orientation: 'h',
      x: ordered.map(b => b.cost),
      y: ordered.map((_, i) => i),
      text: ordered.map(b => formatUSD(b.cost)),
      textposition: 'auto',
      insidetextanchor: 'end',
      textfont: { color: font, size: 10 },
      customdata: ordered.map(b => [b.label, b.calls, b.unknown]),
      hovertemplate:
        '%{customdata[0]}<br>%{text} over %{customdata[1]} call(s)' +
        '<br>unpriced calls: %{customdata[2]}<extra></extra>',
      marker: { color: bar, opacity: 0.85 }
    }
  ];
  const layout = {
    height: 12 + 26 * ordered.length,
    margin: { l: Math.min(150, 12 + 6.2 * longest), r: 8, t: 4, b: 8 },
    paper_bgcolor: 'rgba(0,0,0,0)',
    plot_bgcolor: 'rgba(0,0,0,0)',
    font: { color: font, family, size: 11 },
    bargap: 0.25,
    xaxis: {
      // The amounts are written on the bars; a narrow sidebar has no room for tick labels.
      showticklabels: false,
      gridcolor: grid,
      zerolinecolor: muted,
      rangemode: 'tozero',
      fixedrange: true
    },
    yaxis: {
      tickvals: ordered.map((_, i) => i),
      ticktext: labels,
      automargin: true,
      fixedrange: true
    },
    showlegend: false
  };
  await Plotly.react(el, data, layout, {
    displayModeBar: false,
    responsive: true,
    staticPlot: false
  });
}

export async function resizeChart(el: HTMLElement): Promise<void> {
  if (plotly && el.querySelector('.plot-container')) {
    (await plotly).Plots.resize(el);
  }
}

export async function purgeChart(el: HTMLElement): Promise<void> {
  if (plotly) {
    (await plotly).purge(el);
  }
}
