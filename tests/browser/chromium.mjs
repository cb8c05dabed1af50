// The one way the browser tests start Debian's Chromium headless: as root (--no-sandbox), with
// the background networking that this machine's closed network refuses turned off. `extraArgs`
// adds flags (the cross-origin check maps a hostile name to 127.0.0.1).
import { chromium } from 'playwright-core';

export function launchChromium(extraArgs = []) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      ...extraArgs,
    ],
  });
}
