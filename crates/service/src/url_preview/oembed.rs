//! oEmbed responses (https://oembed.com) as Open Graph data, as Synapse reads them.

use serde_json::Value;

use super::OpenGraph;

/// What an oEmbed response gives a preview.
pub(super) struct OembedResult {
    pub(super) open_graph: OpenGraph,
    pub(super) author_name: Option<String>,
    /// `cache_age` in milliseconds, when given.
    pub(super) cache_age_ms: Option<u64>,
}

/// The HTML entities a common WordPress plug-in leaves escaped in oEmbed titles.
fn unescape_entities(text: &str) -> String {
    if !text.contains('&') {
        return text.to_owned();
    }
    // The HTML parser decodes every named and numeric entity.
    let fragment = scraper::Html::parse_fragment(&format!("<p>{}</p>", text.replace('<', "&lt;")));
    fragment.root_element().text().collect()
}

/// The Open Graph data of an oEmbed response for `url` (the previewed URL).
pub(super) fn parse(url: &str, body: &[u8]) -> OembedResult {
    let empty = || OembedResult { open_graph: OpenGraph::new(), author_name: None, cache_age_ms: None };
    let Ok(Value::Object(oembed)) = serde_json::from_slice::<Value>(body) else { return empty() };
    // `version` is required but often missing, or a number.
    match oembed.get("version") {
        None => {}
        Some(Value::String(v)) if v == "1.0" => {}
        Some(Value::Number(n)) if n.as_f64() == Some(1.0) => {}
        Some(_) => return empty(),
    }
    let cache_age_ms = match oembed.get("cache_age") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
        _ => None,
    }
    .map(|seconds| seconds.saturating_mul(1000));
    let text = |key: &str| oembed.get(key).and_then(Value::as_str).filter(|s| !s.is_empty());

    let mut og = OpenGraph::new();
    og.insert("og:url".to_owned(), Value::from(url));
    if let Some(title) = text("title") {
        og.insert("og:title".to_owned(), Value::from(unescape_entities(title)));
    }
    if let Some(provider) = text("provider_name") {
        og.insert("og:site_name".to_owned(), Value::from(provider));
    }
    if let Some(thumbnail) = text("thumbnail_url") {
        og.insert("og:image".to_owned(), Value::from(thumbnail));
    }
    match oembed.get("type").and_then(Value::as_str) {
        Some("rich") => {
            if let Some(html) = text("html") {
                describe_embedded_html(&mut og, html);
            }
        }
        Some("photo") => {
            if let Some(photo) = text("url") {
                og.insert("og:image".to_owned(), Value::from(photo));
            }
        }
        Some("video") => {
            og.insert("og:type".to_owned(), Value::from("video.other"));
            if let Some(html) = text("html") {
                describe_embedded_html(&mut og, html);
            }
            for size in ["width", "height"] {
                if let Some(value) = oembed.get(size).and_then(Value::as_i64) {
                    og.insert(format!("og:video:{size}"), Value::from(value));
                }
            }
        }
        Some("link") => {
            og.insert("og:type".to_owned(), Value::from("website"));
        }
        other => tracing::info!(oembed_type = ?other, "unknown oEmbed type"),
    }
    let author_name = oembed.get("author_name").and_then(Value::as_str).map(str::to_owned);
    OembedResult { open_graph: og, author_name, cache_age_ms }
}

/// The image, video and text description of an oEmbed `html` snippet.
fn describe_embedded_html(og: &mut OpenGraph, html: &str) {
    let page = super::html::parse(html);
    if !og.contains_key("og:image")
        && let Some(image) = page.first_src("img")
    {
        og.insert("og:image".to_owned(), Value::from(image));
    }
    if let Some(video) = page.first_src("video").or_else(|| page.first_src("embed")) {
        og.insert("og:video".to_owned(), Value::from(video));
    }
    if let Some(description) = page.text_description() {
        og.insert("og:description".to_owned(), Value::from(description));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_video_response_becomes_open_graph() {
        let body = br#"{"version": "1.0", "type": "video", "title": "Tom &amp; Jerry",
            "author_name": "Author", "provider_name": "VideoSite", "cache_age": "600",
            "thumbnail_url": "https://img.example/t.jpg", "width": 640, "height": 360,
            "html": "<iframe src='https://player.example/1'></iframe><p>About it</p>"}"#;
        let result = parse("https://video.example/watch?v=1", body);
        let og = result.open_graph;
        assert_eq!(og["og:url"], "https://video.example/watch?v=1");
        assert_eq!(og["og:title"], "Tom & Jerry");
        assert_eq!(og["og:site_name"], "VideoSite");
        assert_eq!(og["og:image"], "https://img.example/t.jpg");
        assert_eq!(og["og:type"], "video.other");
        assert_eq!(og["og:video:width"], 640);
        assert_eq!(og["og:description"], "About it");
        assert_eq!(result.author_name.as_deref(), Some("Author"));
        assert_eq!(result.cache_age_ms, Some(600_000));
    }

    #[test]
    fn photos_use_the_full_image_and_bad_responses_give_nothing() {
        let og =
            parse("u", br#"{"type": "photo", "url": "https://i/full.png", "thumbnail_url": "t"}"#).open_graph;
        assert_eq!(og["og:image"], "https://i/full.png");
        assert!(parse("u", b"not json").open_graph.is_empty());
        assert!(parse("u", br#"{"version": "2.0", "type": "link"}"#).open_graph.is_empty());
        assert!(parse("u", b"[]").open_graph.is_empty());
    }
}
