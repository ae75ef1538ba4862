// The Electron main process's rules, kept free of the `electron` module so they are tested under
// plain Node: which URLs the window may show, which links leave to the system browser, which IPC
// senders are trusted, the menu's shape, and the recent-items list.
import fs from 'node:fs';
import path from 'node:path';

export const APP_SCHEME = 'app';
export const APP_HOST = 'calibscope';
export const APP_ORIGIN = `${APP_SCHEME}://${APP_HOST}`;
export const REQUEST_CHANNEL = 'calibscope:request';
export const EVENT_CHANNEL = 'calibscope:event';

function parse(url: string): URL | null {
  try {
    return new URL(url);
  } catch {
    return null;
  }
}

/** The app's own pages: app://calibscope/… and nothing else. */
export function isAppUrl(url: string): boolean {
  const u = parse(url);
  return u !== null && u.protocol === `${APP_SCHEME}:` && u.host === APP_HOST;
}

/** Links that may be handed to the system browser: http(s) only (no file:, javascript:, custom schemes). */
export function isExternalAllowed(url: string): boolean {
  const u = parse(url);
  return u !== null && (u.protocol === 'http:' || u.protocol === 'https:') && u.hostname !== '';
}

export interface SenderInfo {
  /** The sending frame's URL (event.senderFrame.url). */
  frameUrl: string | undefined;
  /** Whether it is the top frame of its page. */
  isMainFrame: boolean;
  /** The sending webContents' id, and the id of the app window's webContents. */
  webContentsId: number;
  windowWebContentsId: number | null;
}

/** Only the app window's top frame, showing the app's own page, may talk to the service. */
export function isTrustedSender(s: SenderInfo): boolean {
  return s.windowWebContentsId !== null && s.webContentsId === s.windowWebContentsId && s.isMainFrame && s.frameUrl !== undefined && isAppUrl(s.frameUrl);
}

export interface RecentItem {
  kind: 'model' | 'pipeline';
  path: string;
}

const MAX_RECENT = 10;

/** Recently opened models and pipelines, most recent first, kept in a JSON file (written atomically). */
export class RecentList {
  constructor(private readonly file: string) {}

  load(): RecentItem[] {
    try {
      const v = JSON.parse(fs.readFileSync(this.file, 'utf8')) as unknown;
      if (!Array.isArray(v)) return [];
      return v
        .filter((x): x is RecentItem => typeof x === 'object' && x !== null && (x.kind === 'model' || x.kind === 'pipeline') && typeof x.path === 'string')
        .slice(0, MAX_RECENT);
    } catch {
      return [];
    }
  }

  add(item: RecentItem): RecentItem[] {
    const list = [item, ...this.load().filter((x) => !(x.kind === item.kind && x.path === item.path))].slice(0, MAX_RECENT);
    fs.mkdirSync(path.dirname(this.file), { recursive: true });
    const tmp = `${this.file}.tmp-${process.pid}`;
    fs.writeFileSync(tmp, `${JSON.stringify(list, null, 2)}\n`);
    fs.renameSync(tmp, this.file);
    return list;
  }
}

/** The parts of Electron's MenuItemConstructorOptions the menu uses. */
export interface MenuItem {
  label?: string;
  role?: string;
  type?: 'separator' | 'submenu';
  accelerator?: string;
  enabled?: boolean;
  submenu?: MenuItem[];
  click?: () => void;
}

export interface MenuActions {
  openModel(): void;
  openPipeline(): void;
  openRecent(item: RecentItem): void;
  openDemo(): void;
}

export function menuTemplate(recent: readonly RecentItem[], actions: MenuActions): MenuItem[] {
  const recentItems: MenuItem[] =
    recent.length > 0
      ? recent.map((r) => ({ label: `${r.kind === 'pipeline' ? 'Pipeline' : 'Model'}: ${r.path}`, click: () => actions.openRecent(r) }))
      : [{ label: 'No recent items', enabled: false }];
  return [
    {
      label: 'File',
      submenu: [
        { label: 'Open Model Folder…', accelerator: 'CmdOrCtrl+O', click: actions.openModel },
        { label: 'Open Pipeline…', accelerator: 'CmdOrCtrl+Shift+O', click: actions.openPipeline },
        { label: 'Open Recent', submenu: recentItems },
        { label: 'Open the Demo Pipeline', click: actions.openDemo },
        { type: 'separator' },
        { role: 'quit' },
      ],
    },
    { label: 'Edit', submenu: [{ role: 'copy' }, { role: 'paste' }, { role: 'selectAll' }] },
    { label: 'View', submenu: [{ role: 'reload' }, { role: 'toggleDevTools' }, { type: 'separator' }, { role: 'resetZoom' }, { role: 'zoomIn' }, { role: 'zoomOut' }, { role: 'togglefullscreen' }] },
  ];
}
