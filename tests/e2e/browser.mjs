#!/usr/bin/env node
// The full login in a real browser (Debian chromium driven by playwright-core):
// protected URL → IdP login form → back to the app → user info page shows the right
// groups (screenshot kept) → sign-out → the app asks for a sign-in again.
//
// Run by tests/tests/e2e.rs; everything comes from the environment:
//   PORTCULLIS_IDP_DIR (where playwright-core is installed), CHROMIUM, APP_URL,
//   USER_INFO_URL, IDP_ISSUER, LOGIN_USER, LOGIN_PASSWORD, EXPECT_GROUPS (comma list),
//   SCREENSHOT (png path), PROFILE_DIR (fresh user data dir).
// Exit 0 = every step passed; otherwise a message naming the failed step.
import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';

const env = (name) => {
  const v = process.env[name];
  if (!v) {
    console.error(`browser.mjs: missing ${name}`);
    process.exit(2);
  }
  return v;
};

const require = createRequire(path.join(env('PORTCULLIS_IDP_DIR'), 'package.json'));
const { chromium } = require('playwright-core');

const appUrl = env('APP_URL');
const userInfoUrl = env('USER_INFO_URL');
const issuer = env('IDP_ISSUER');
const groups = env('EXPECT_GROUPS').split(',').filter(Boolean);
const profile = env('PROFILE_DIR');
fs.rmSync(profile, { recursive: true, force: true });

function step(name) {
  console.log(`step: ${name}`);
}

const context = await chromium.launchPersistentContext(profile, {
  executablePath: env('CHROMIUM'),
  headless: true,
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});
const page = context.pages()[0] ?? (await context.newPage());
page.setDefaultTimeout(20000);

let failed = false;
try {
  step(`open ${appUrl}`);
  await page.goto(appUrl);
  await page.waitForURL((u) => u.toString().startsWith(issuer));
  step('IdP login form');
  await page.locator('input[name="username"]').fill(env('LOGIN_USER'));
  await page.locator('input[name="password"]').fill(env('LOGIN_PASSWORD'));
  await Promise.all([
    page.waitForURL((u) => u.toString().startsWith(appUrl)),
    page.locator('input[name="password"]').press('Enter'),
  ]);
  step('back at the app');
  const app = await page.locator('body').innerText();
  const echo = JSON.parse(app);
  if (echo.jwt?.verified !== true) throw new Error(`identity JWT not verified by the app: ${app}`);
  for (const g of groups) {
    if (!(echo.jwt.claims.groups ?? []).includes(g)) throw new Error(`JWT lacks group ${g}: ${app}`);
  }
  if ((echo.headers.cookie ?? []).some((c) => c.includes('_pomerium'))) {
    throw new Error('the session cookie reached the app');
  }

  step(`user info page ${userInfoUrl}`);
  await page.goto(userInfoUrl);
  const info = await page.locator('body').innerText();
  for (const g of groups) {
    if (!info.includes(g)) throw new Error(`user info page does not show group ${g}:\n${info}`);
  }
  if (!info.includes(`${env('LOGIN_USER')}@example.com`)) {
    throw new Error(`user info page does not show the email:\n${info}`);
  }
  await page.screenshot({ path: env('SCREENSHOT'), fullPage: true });

  step('sign out');
  const signOut = page.locator('form[action$="/.pomerium/sign_out"] [type="submit"], form[action$="/.pomerium/sign_out"] button').first();
  await signOut.click();
  await page.waitForLoadState('load');
  step(`signed out at ${page.url()}`);

  step('the app asks for a sign-in again');
  const seen = [];
  page.on('request', (r) => seen.push(r.url()));
  await page.goto(appUrl);
  // The IdP session may still be alive and sign the user straight back in; what matters
  // is that the revoked session was not accepted: the request went to sign-in.
  if (!seen.some((u) => u.includes('/.pomerium/sign_in'))) {
    throw new Error(`after sign-out the app answered without a sign-in: ${seen.join(' → ')}`);
  }
  console.log('ok');
} catch (e) {
  failed = true;
  console.error(`browser scenario failed: ${e.stack ?? e}`);
  try {
    await page.screenshot({ path: env('SCREENSHOT').replace(/\.png$/, '-failure.png'), fullPage: true });
    console.error(`page at failure: ${page.url()}`);
  } catch {}
} finally {
  await context.close();
}
process.exit(failed ? 1 : 0);
