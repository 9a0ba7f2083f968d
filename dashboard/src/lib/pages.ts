// Every page of the dashboard: its route (`#/<id>`), its title, the scope it needs, and its component.
//
// Pages are bundled with the shell rather than loaded per route: measured on this app, one chunk for all of them
// gzips to about 20 KB less in total than a chunk per page (each chunk repeats its imports and compresses
// alone), and the whole bundle still parses in a few milliseconds. The one big library, uPlot, is loaded on
// demand by Chart.svelte instead, so the sign-in page does not wait for it.

import type { Component } from 'svelte';
import type { Scope } from './api';
import AdminUsage from '../pages/AdminUsage.svelte';
import Events from '../pages/Events.svelte';
import Install from '../pages/Install.svelte';
import Keys from '../pages/Keys.svelte';
import Links from '../pages/Links.svelte';
import Match from '../pages/Match.svelte';
import Overview from '../pages/Overview.svelte';
import Reports from '../pages/Reports.svelte';
import Rules from '../pages/Rules.svelte';
import Tenants from '../pages/Tenants.svelte';
import Usage from '../pages/Usage.svelte';
import Webhooks from '../pages/Webhooks.svelte';

export interface PageDef {
  id: string;
  title: string;
  /** The scope without which the page has nothing to show. */
  needs?: Scope;
  component: Component;
}

export const TENANT_PAGES: PageDef[] = [
  { id: 'overview', title: 'Overview', needs: 'read', component: Overview },
  { id: 'events', title: 'Events', needs: 'read', component: Events },
  { id: 'links', title: 'Links', needs: 'read', component: Links },
  { id: 'reports', title: 'Reports', needs: 'read', component: Reports },
  { id: 'match', title: 'Match', needs: 'read', component: Match },
  { id: 'webhooks', title: 'Webhooks', needs: 'read', component: Webhooks },
  { id: 'rules', title: 'Rules and drops', needs: 'read', component: Rules },
  { id: 'usage', title: 'Usage', needs: 'read', component: Usage },
  { id: 'keys', title: 'Keys and tokens', needs: 'admin', component: Keys },
  { id: 'install', title: 'Install', needs: 'read', component: Install },
];

export const OPERATOR_PAGES: PageDef[] = [
  { id: 'tenants', title: 'Tenants', component: Tenants },
  { id: 'admin-usage', title: 'Usage across tenants', component: AdminUsage },
];
