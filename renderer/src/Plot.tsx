// A thin React wrapper around plotly.js-dist-min: Plotly.react on every change (cheap when the
// data is the same), Plotly.purge on unmount, and the plot's events passed on. plotly.js (4.6 MB)
// loads on its own, after the first paint, so the model list does not wait for it.
import { useEffect, useRef } from 'react';
import type { Config, Data, Layout, PlotMouseEvent, PlotRelayoutEvent } from 'plotly.js';

export interface PlotProps {
  data: Data[];
  layout: Partial<Layout>;
  config?: Partial<Config>;
  className?: string;
  testId?: string;
  onHover?: (e: PlotMouseEvent) => void;
  onUnhover?: () => void;
  onClick?: (e: PlotMouseEvent) => void;
  onRelayout?: (e: PlotRelayoutEvent) => void;
  /** Called after each draw with the time Plotly took (ms). */
  onDrawn?: (ms: number) => void;
}

type PlotlyApi = typeof import('plotly.js-dist-min').default;
let plotly: Promise<PlotlyApi> | null = null;

export function loadPlotly(): Promise<PlotlyApi> {
  plotly ??= import('plotly.js-dist-min').then((m) => m.default);
  return plotly;
}

type PlotDiv = HTMLDivElement & { on(event: string, cb: (e: never) => void): void; removeAllListeners?(event: string): void };

export function Plot(props: PlotProps) {
  const ref = useRef<HTMLDivElement>(null);
  const handlers = useRef(props);
  handlers.current = props;

  useEffect(() => {
    const el = ref.current as PlotDiv | null;
    if (!el) return;
    let stale = false;
    void loadPlotly().then(async (Plotly) => {
      if (stale) return;
      const t0 = performance.now();
      // No "Share chart" button: it uploads the plot's data (a private model's scales) to Plotly's cloud.
      await Plotly.react(el, props.data, props.layout, { displaylogo: false, responsive: true, ...props.config, showSendToCloud: false });
      handlers.current.onDrawn?.(performance.now() - t0);
    });
    return () => {
      stale = true;
    };
  }, [props.data, props.layout, props.config]);

  useEffect(() => {
    const el = ref.current as PlotDiv | null;
    if (!el) return;
    // Listeners are attached once the first draw made the element a plot.
    const attach = () => {
      el.on('plotly_hover', (e: PlotMouseEvent) => handlers.current.onHover?.(e));
      el.on('plotly_unhover', () => handlers.current.onUnhover?.());
      el.on('plotly_click', (e: PlotMouseEvent) => handlers.current.onClick?.(e));
      el.on('plotly_relayout', (e: PlotRelayoutEvent) => handlers.current.onRelayout?.(e));
    };
    const timer = setInterval(() => {
      if (typeof el.on === 'function') {
        clearInterval(timer);
        attach();
      }
    }, 20);
    return () => {
      clearInterval(timer);
      void loadPlotly().then((Plotly) => Plotly.purge(el));
    };
  }, []);

  return <div ref={ref} className={props.className} data-testid={props.testId} />;
}
