"""Open every page of the built site in headless Chromium from `file://`; fail on what a reader sees broken.

`make docs-check` runs it after `make docs`. A page fails when the browser logs a console error (SEVERE: a
script that throws, a file that does not load), when its notebook has figures (PNG outputs) and the page shows
fewer images (or one that does not decode), when its text holds math and MathJax typeset none of it (no
`mjx-container`), when it loads anything over the network, or when it links to a file the site does not have.
The landing page's screenshot is kept in the output folder.
"""
import argparse
import json
import re
import shutil
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

from bs4 import BeautifulSoup
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

ROOT = Path(__file__).resolve().parent.parent
# math as the notebooks write it ($x$, $$x$$) and as MathJax also reads it (\(x\), \[x\])
MATH = re.compile(r'\$\$.+?\$\$|\$[^$\s][^$]*?\$|\\\(.+?\\\)|\\\[.+?\\\]', re.S)
# what the page fetches over http(s): with a network it loads and hides that offline it cannot
REMOTE_JS = """return performance.getEntriesByType('resource').map(e => e.name).concat(
    Array.from(document.querySelectorAll('script[src], link[rel=stylesheet], img[src], iframe[src]'),
               e => e.src || e.href)).filter(url => /^https?:/.test(url))"""
MATH_SECONDS = 20  # MathJax typesets after the page loads: long enough for the biggest page on a busy machine


def has_math(page_html):
    "Whether the page's prose (not its code, scripts or styles) holds math for MathJax."
    soup = BeautifulSoup(page_html, 'html.parser')
    for element in soup(['pre', 'code', 'script', 'style']):
        element.decompose()
    return bool(MATH.search(soup.get_text()))


def figures(notebook):
    "How many PNG figures the page's notebook holds."
    if not notebook.exists():
        return 0
    cells = json.loads(notebook.read_text())['cells']
    return sum('image/png' in out.get('data', {}) for cell in cells for out in cell.get('outputs', []))


def browser(chromium, chromedriver):
    "Headless Chromium that keeps the pages' console messages."
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
                '--window-size=1280,900'):
        options.add_argument(arg)
    options.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    return webdriver.Chrome(options=options, service=Service(chromedriver))


def page_problems(driver, page, n_figures):
    "What is broken on `page` as Chromium shows it; empty when nothing is."
    driver.get(page.as_uri())
    problems = []
    if has_math(page.read_text()):
        try:
            WebDriverWait(driver, MATH_SECONDS).until(lambda d: d.execute_script(
                "return document.querySelectorAll('mjx-container').length"))
        except TimeoutException:
            problems.append(f'math in the text, none typeset by MathJax after {MATH_SECONDS} s')
    images = driver.execute_script(
        "return Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
    if n_figures and sum(images) < n_figures:
        problems.append(f'{n_figures} figures in the notebook, {sum(images)} images shown')
    problems += [f'loads from the network: {url}' for url in sorted(set(driver.execute_script(REMOTE_JS)))]
    links = driver.execute_script("return Array.from(document.links).map(a => a.href.split('#')[0])")
    problems += [f'link to a missing file: {link}' for link in sorted(set(links))
                 if link.startswith('file:') and not Path(unquote(urlparse(link).path)).exists()]
    problems += [f"console: {e['message']}" for e in driver.get_log('browser') if e['level'] == 'SEVERE']
    return problems


def check_site(site, notebooks, out, chromium='/usr/bin/chromium', chromedriver='/usr/bin/chromedriver'):
    "Problems of each page of `site` (`notebooks`: the pages' notebooks); its front page's picture in `out`."
    # 404.html is what a web server sends for a missing page: it links from the server's root, not file://
    pages = sorted(page for page in site.glob('*.html') if page.name != '404.html')
    if not pages:
        raise FileNotFoundError(f'No pages in {site}: build the site first (`make docs`).')
    out.mkdir(parents=True, exist_ok=True)
    driver = browser(chromium, chromedriver)
    try:
        problems = {page.name: page_problems(driver, page, figures(notebooks/f'{page.stem}.ipynb'))
                    for page in pages}
        driver.get((site/'index.html').as_uri())
        driver.save_screenshot(str(out/'index.png'))
    finally:
        driver.quit()
    return {name: found for name, found in problems.items() if found}, len(pages)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--site', type=Path, default=ROOT/'_site')
    parser.add_argument('--notebooks', type=Path, default=ROOT/'_build'/'site_src',
                        help="the pages' notebooks")
    parser.add_argument('--out', type=Path, default=ROOT/'_site_check', help='where the screenshot goes')
    args = parser.parse_args(argv)
    for tool in ('chromium', 'chromedriver'):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: install Debian's chromium and chromium-driver "
                     "(make docs-check does).")
    problems, n_pages = check_site(args.site, args.notebooks, args.out,
                                   shutil.which('chromium'), shutil.which('chromedriver'))
    for name, found in problems.items():
        print(f'{name}:\n  ' + '\n  '.join(found))
    if problems:
        sys.exit(f'{len(problems)} of {n_pages} pages broken')
    print(f'{n_pages} pages checked in Chromium: no console error, every figure shown, math typeset, '
          f'nothing from the network, no dead link; screenshot {args.out/"index.png"}')


if __name__ == '__main__':
    main()
