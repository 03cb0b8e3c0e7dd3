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

# Below PHONE_PX (a phone) each figure is relaid out, and every change is undone when the window widens again (on
# resize: place() only acts when the width crosses PHONE_PX; it remembers the figure's own values of what it changed):
# - a legend right of the plot squeezes the plot to a sliver and covers data: it goes under the plot, anchored to the
#   figure's bottom edge (so it reserves its own margin below the x-axis title), its title above its entries (a side
#   with 'left' indents every row by the title's width); the figure, and the fixed-height div that to_html wraps it
#   in, grow by the legend's height;
# - panels side by side (make_subplots, one row) are too narrow, and the second panel's y-axis title lands on the
#   first panel: they go one above the other, each as tall as the figure was, their titles with them;
# - an axis title longer than its axis is cut off at the figure's edge: it breaks into lines between words (the
#   axes' automargin makes room for them); a note (annotation) that sticks out of the figure, such as a budget line's
#   label or a panel's title, moves in, as little as it must;
# - a figure with a layout of its own for a phone (layout.meta.phone, figures.figure_html) is drawn with it, its
#   traces' x and y swapped: the parallel coordinates' axes run across the page, one under the other.
PHONE_PX = 600
_PHONE_SCRIPT = """
(function(){
var mq=window.matchMedia('(max-width: __PHONE__px)');
var legend={'legend.orientation':'h','legend.x':0,'legend.xanchor':'left','legend.xref':'container',
  'legend.y':0,'legend.yanchor':'bottom','legend.yref':'container','legend.title.side':'top'};
function get(o,k){return k.replace(/\\]/g,'').split(/[.[]/).reduce(function(a,p){return a==null?undefined:a[p];},o);}
function keep(gd,u){  // remember the figure's own value of each key the phone changes, once
  var o=gd._effscopeOwn;
  Object.keys(u).forEach(function(k){
    if(k in o)return;var v=get(gd.layout,k);o[k]=v===undefined?null:Array.isArray(v)?v.slice():v;});
  return u;
}
function stack(gd,h){  // {n: panels, keys: the relayout that puts them one above the other} or null
  var L=gd.layout,xs=[],n,g,u={};
  for(n=1;L['xaxis'+(n>1?n:'')];n++)xs.push(n>1?n:'');
  n=xs.length;
  if(n<2||!xs.every(function(s,i){var x=L['xaxis'+s].domain,y=L['yaxis'+s];
    return x&&y&&y.domain&&(!i||L['xaxis'+xs[i-1]].domain[1]<=x[0]);}))return null;
  g=150/(n*h-150);  // between two panels: the upper one's ticks and x-axis title, the lower one's title
  xs.forEach(function(s,i){
    var x=L['xaxis'+s].domain,y=L['yaxis'+s].domain,top=1-i*(1+g)/n;
    u['xaxis'+s+'.domain']=[0,1];u['yaxis'+s+'.domain']=[top-(1-g*(n-1))/n,top];
    (L.annotations||[]).forEach(function(a,j){  // the panel's title (make_subplots: centred above the panel)
      if(a.xref==='paper'&&a.yref==='paper'&&Math.abs(a.x-(x[0]+x[1])/2)<1e-6&&Math.abs(a.y-y[1])<1e-6){
        u['annotations['+j+'].x']=0.5;u['annotations['+j+'].y']=top;}
    });
  });
  return {n:n,keys:u};
}
function titles(gd){
  var L=gd._fullLayout,u={};
  Object.keys(L).forEach(function(k){
    var ax=L[k];if(!/^[xy]axis\\d*$/.test(k)||!ax||!ax._id||!ax.title)return;
    var t=ax.title.text,el=gd.querySelector('.g-'+ax._id+'title text');
    if(!t||!el||t.indexOf('<br>')>=0)return;
    var w=el.getBBox().width;if(!w||w<=ax._length)return;
    var n=Math.ceil(w/ax._length),most=Math.max(10,Math.floor(t.length*ax._length/w)),lines;
    for(var per=Math.min(Math.ceil(t.length/n),most);per<=most;per++){  // lines of even length: the fewest that fit
      lines=[''];t.split(' ').forEach(function(word){var i=lines.length-1;if(!lines[i])lines[i]=word;
        else if(lines[i].length+1+word.length>per)lines.push(word);else lines[i]+=' '+word;});
      if(lines.length<=n)break;}
    if(lines&&lines.length>1)u[k+'.title.text']=lines.join('<br>');
  });
  return u;
}
function inside(gd){
  var box=gd.getBoundingClientRect(),all=gd.layout.annotations||[],u={};
  gd.querySelectorAll('g.annotation').forEach(function(g){
    var i=+g.getAttribute('data-index'),r=g.getBoundingClientRect(),dx=0;
    if(!all[i]||r.width>box.width)return;
    if(r.left<box.left)dx=box.left-r.left+2;else if(r.right>box.right)dx=box.right-r.right-2;
    if(dx)u['annotations['+i+'].xshift']=(all[i].xshift||0)+Math.round(dx);
  });
  return u;
}
function turn(gd,p){
  var wide=gd._effscopeWide={data:gd.data,layout:gd.layout},layout=JSON.parse(JSON.stringify(p));
  layout.template=wide.layout.template;gd._effscopeOwn={};  // what the phone changes next, it changes in `layout`
  return Plotly.react(gd,wide.data.map(function(t){return Object.assign({},t,{x:t.y,y:t.x});}),layout);
}
// A height goes through CSS, on the figure's div and the div to_html wraps it in, then plotly's resize: relayout's
// height would pin the width too, and a later resize (the window's) would no longer follow the page's width.
function size(gd,h){gd.style.height=gd.parentElement.style.height=h+'px';return Plotly.Plots.resize(gd);}
function place(gd){
  if(!gd._fullLayout||!gd.offsetParent)return;
  if(!gd._effscopeOwn){gd._effscopeOwn={};gd._effscopeHeight=gd._fullLayout.height;}
  var own=gd._effscopeHeight,wide=gd._effscopeWide;
  if(!mq.matches){
    if(!gd._effscopePhone)return;
    gd._effscopePhone=false;gd._effscopeWide=null;
    (wide?Plotly.react(gd,wide.data,wide.layout):Plotly.relayout(gd,gd._effscopeOwn)).then(function(){
      if(wide)gd._effscopeOwn={};return size(gd,own);});
    return;
  }
  if(gd._effscopePhone)return;
  gd._effscopePhone=true;
  var p=gd.layout.meta&&gd.layout.meta.phone,s=!p&&stack(gd,own);
  // at the new width first: the titles are measured against it
  Plotly.Plots.resize(gd).then(function(){return p&&turn(gd,p);}).then(function(){
    var u=Object.assign({},s&&s.keys,gd._fullLayout.showlegend?legend:{});return Plotly.relayout(gd,keep(gd,u));
  }).then(function(){
    var h=(gd._fullLayout.showlegend&&gd._fullLayout.legend._height)||0;
    if(gd._effscopePhone&&(h||s||p))return size(gd,(p?p.height:own*(s?s.n:1))+h);
  }).then(function(){
    var t=gd._effscopePhone&&titles(gd);if(t&&Object.keys(t).length)return Plotly.relayout(gd,keep(gd,t));
  }).then(function(){
    var a=gd._effscopePhone&&inside(gd);if(a&&Object.keys(a).length)return Plotly.relayout(gd,keep(gd,a));
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
        f"<nav>{nav}</nav>{sections}</main><script>{_PHONE_SCRIPT}</script></body></html>\n"
    )
