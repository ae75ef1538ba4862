// Light/dark: follows the system (prefers-color-scheme) unless the user picked one; plots get
// matching colours.
import { useEffect, useState } from 'react';
import { useW } from './context';

export type Resolved = 'light' | 'dark';

export function useResolvedTheme(): Resolved {
  const pref = useW((s) => s.theme);
  const [system, setSystem] = useState<Resolved>(() => (matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light'));
  useEffect(() => {
    const mq = matchMedia('(prefers-color-scheme: dark)');
    const on = () => setSystem(mq.matches ? 'dark' : 'light');
    mq.addEventListener('change', on);
    return () => mq.removeEventListener('change', on);
  }, []);
  return pref === 'auto' ? system : pref;
}

export interface PlotColors {
  bg: string;
  fg: string;
  grid: string;
  accent: string;
  before: string;
  after: string;
  danger: string;
}

export function plotColors(t: Resolved): PlotColors {
  return t === 'dark'
    ? { bg: '#1b1e23', fg: '#d8dde4', grid: '#343a42', accent: '#6cb6ff', before: '#8b949e', after: '#6cb6ff', danger: '#ff7b72' }
    : { bg: '#ffffff', fg: '#1f2328', grid: '#e3e6ea', accent: '#0969da', before: '#8c959f', after: '#0969da', danger: '#cf222e' };
}
