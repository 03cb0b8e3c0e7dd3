"""Draw a report's contents (contents.py) as one HTML document: the page around the sections' bodies.

Each section draws its own body with plotly (report/sections/). plotly.js goes into the page once ("inline", offline,
about 4.8 MB), or into one shared plotly.min.js next to the reports ("directory"), or comes from the CDN ("cdn", only
when asked: a CDN page is blank offline). No optuna or torch here.
"""

from __future__ import annotations

import datetime as _dt
import html
from pathlib import Path
from typing import TYPE_CHECKING

from effscope._version import __version__
from effscope.report.data import ReportError
from effscope.report.markup import FONT, inline_html
from effscope.report.sections import page_order

if TYPE_CHECKING:
    from effscope.report.contents import ReportData

__all__ = ["PLOTLYJS_FILE", "PLOTLYJS_MODES", "render", "write_plotlyjs"]


PLOTLYJS_MODES = ("inline", "directory", "cdn")
PLOTLYJS_FILE = "plotly.min.js"


_CSS = """
body{font-family:__FONT__;color:#222;margin:0;background:#fafafa}
main{max-width:1240px;margin:0 auto;padding:24px 28px 60px;background:#fff}
h1{font-size:1.6em;margin:0 0 4px}h2{font-size:1.3em;margin:36px 0 10px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:1.05em;margin:22px 0 8px}
.sub{color:#666;margin:0 0 12px}nav{font-size:.92em;margin:8px 0 16px}nav a{margin-right:14px;color:#0072B2}
.note{background:#fff6e0;border-left:4px solid #E69F00;padding:6px 10px;margin:8px 0}
.hint{color:#555;font-size:.92em}
.badge{background:#E69F00;color:#fff;border-radius:3px;padding:0 5px;font-size:.8em}
.table-wrap{overflow-x:auto}
table{border-collapse:collapse;font-size:.88em;margin:6px 0 10px}
th,td{border-bottom:1px solid #e4e4e4;padding:4px 9px;text-align:left;vertical-align:top}
thead th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
table.facts{width:100%}table.facts th{font-weight:600;background:none;width:200px}
table.facts td{overflow-wrap:anywhere}
code{font-family:ui-monospace,'DejaVu Sans Mono',monospace;font-size:.9em;background:#f1f1f1;padding:0 3px}
@media (max-width:600px){main{padding:16px 12px 40px}table.facts th{width:35%}}
#effscope-errors{background:#fde8e8;border-left:4px solid #c00;padding:8px 12px;white-space:pre-wrap}
"""

# Any script error shows as a visible banner (a report that silently misses a figure misleads).
_ERROR_SINK = """
window.effscopeErrors=[];
function effscopeError(m){window.effscopeErrors.push(String(m));var b=document.getElementById('effscope-errors');
if(b){b.hidden=false;b.textContent='A figure failed to render: '+window.effscopeErrors.join(' | ');}}
window.addEventListener('error',function(e){effscopeError(e.message||e);});
window.addEventListener('unhandledrejection',function(e){effscopeError(e.reason);});
document.addEventListener('DOMContentLoaded',function(){if(window.effscopeErrors.length)effscopeError('');});
"""

# Below PHONE_PX a legend right of the plot squeezes the plot to a sliver and covers data: put it under the plot,
# anchored to the figure's bottom edge (so it reserves its own margin below the x-axis title), its title above its
# entries (a side with 'left' indents every row by the title's width), and grow the figure and the fixed-height div
# that to_html wraps it in by the legend's height. Widening the window gives each figure its own legend back (on
# resize: place() only acts when the width crosses PHONE_PX).
PHONE_PX = 600
_PHONE_LEGEND = """
(function(){
var mq=window.matchMedia('(max-width: __PHONE__px)');
var keys=['orientation','x','xanchor','xref','y','yanchor','yref','title.side'];
var phone={'legend.orientation':'h','legend.x':0,'legend.xanchor':'left','legend.xref':'container',
  'legend.y':0,'legend.yanchor':'bottom','legend.yref':'container','legend.title.side':'top'};
function own(gd){
  if(gd._effscopeOwn)return gd._effscopeOwn;
  var o={height:gd.layout.height},l=gd.layout.legend||{};
  keys.forEach(function(k){
    var v=k.split('.').reduce(function(a,p){return a&&a[p];},l);o['legend.'+k]=v===undefined?null:v;});
  gd._effscopeOwn=o;gd._effscopeCss=gd.parentElement.style.height;return o;
}
function place(gd){
  if(!gd._fullLayout||!gd._fullLayout.showlegend)return;
  var o=own(gd);
  if(!mq.matches){
    if(!gd._effscopePhone)return;
    gd._effscopePhone=false;gd.parentElement.style.height=gd._effscopeCss;Plotly.relayout(gd,o);return;
  }
  if(gd._effscopePhone)return;
  gd._effscopePhone=true;
  Plotly.relayout(gd,phone).then(function(){
    var h=(gd._fullLayout.legend&&gd._fullLayout.legend._height)||0;
    if(!h||!o.height||!gd._effscopePhone)return;
    gd.parentElement.style.height=(o.height+h)+'px';return Plotly.relayout(gd,{height:o.height+h});
  });
}
function all(){document.querySelectorAll('.js-plotly-plot').forEach(place);}
window.addEventListener('load',all);
window.addEventListener('resize',all);
})();
""".replace("__PHONE__", str(PHONE_PX))


def _plotly_script(mode: str) -> str:
    import plotly.offline

    if mode == "inline":
        return f'<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script>'
    if mode == "directory":
        return f'<script src="{PLOTLYJS_FILE}"></script>'
    if mode == "cdn":
        return f'<script src="https://cdn.plot.ly/plotly-{plotly.offline.get_plotlyjs_version()}.min.js"></script>'
    raise ReportError(f"--plotlyjs must be one of {', '.join(PLOTLYJS_MODES)}, but got '{mode}'")


def write_plotlyjs(folder: Path) -> Path:
    """Write the shared plotly.min.js into `folder` (once; reports beside it load it with a relative path)."""
    import plotly.offline

    from effscope.output import write_atomic

    path = folder / PLOTLYJS_FILE
    text = plotly.offline.get_plotlyjs()
    if not path.is_file() or path.stat().st_size != len(text.encode()):
        write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path


def render(data: ReportData, *, plotlyjs: str = "inline") -> str:
    """The whole report as one HTML document: every section with data, built-in or registered, in page order."""
    script = _plotly_script(plotlyjs)
    shown = [
        (s, s.render(content) if content is not None else f'<p class="hint">{inline_html(data.absent[s.key])}</p>')
        for s in page_order()
        if (content := data.section(s.key)) is not None or s.key in data.absent
    ]
    nav = "".join(f'<a href="#{s.key}">{i}. {html.escape(s.title)}</a>' for i, (s, _) in enumerate(shown, 1))
    sections = "".join(
        f'<section id="{s.key}"><h2>{i}. {html.escape(s.title)}</h2>{body}</section>'
        for i, (s, body) in enumerate(shown, 1)
    )
    made = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(data.title)}</title>"
        f"<style>{_CSS.replace('__FONT__', FONT)}</style>"
        f"<script>{_ERROR_SINK}</script>{script}</head>"
        '<body><main><div id="effscope-errors" hidden></div>'
        f"<h1>{html.escape(data.title)}</h1>"
        f'<p class="sub">made by effscope {__version__} on {made}</p>'
        f"<nav>{nav}</nav>{sections}</main><script>{_PHONE_LEGEND}</script></body></html>\n"
    )
