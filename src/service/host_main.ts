// Entry point of the service process (see process_host.ts).
import { runServiceHost } from './process_host.js';

void runServiceHost();
