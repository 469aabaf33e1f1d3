// The label as a mailer prints it, in four formats: one drawing (squares and lines of text,
// in PostScript points, origin top left) per format, rendered two ways from the same
// numbers: an SVG for the page's preview and for printing (`@page` sized to the format),
// and a PDF for download (a small writer of our own, below: no dependency).
//
// The Data Matrix is drawn as vector squares at its true module size (MODULE_MM), so a
// printer at any resolution prints it as crisp as it can; text is Helvetica, one of the
// PDF's standard fonts (no font embedded), in WinAnsiEncoding (Latin-1 and the euro sign;
// other characters print as "?").
//
// The addresses are printed beside the indicium, not in it: the indicium's signed layout
// (docs/apdu.md § 5) has the origin and destination postal codes and no address field.

const PT_PER_MM = 72 / 25.4;
/** The Data Matrix's module: 0.6 mm (a 52 × 52 symbol of 128 bytes is 31.2 mm a side). */
export const MODULE_MM = 0.6;

/** The formats: page size in points (portrait as printed), and the CSS `@page` size. */
export const FORMATS = {
  thermal: { name: '4 × 6 in thermal label', w: 288, h: 432, page: '4in 6in' },
  a4: { name: 'A4 sheet (label at the top)', w: 595.28, h: 841.89, page: 'A4' },
  letter: { name: 'US Letter sheet (label at the top)', w: 612, h: 792, page: 'letter' },
  env10: { name: '#10 envelope (9.5 × 4.125 in)', w: 684, h: 297, page: '9.5in 4.125in' },
};

/**
 * The drawing of one label. `d`: { modules: {size, modules}, postage, currency, date,
 * deviceId, piece, license, rateName, from: [lines], to: [lines] }.
 * Answers { w, h, items }: items are {rect: [x, y, w, h]} (black), {text, x, y, size, bold},
 * {line: [x1, y1, x2, y2], dash}.
 */
export function drawLabel(format, d) {
  const f = FORMATS[format];
  if (!f) throw new Error(`unknown label format ${format}`);
  const items = [];
  const m = MODULE_MM * PT_PER_MM;
  const side = d.modules.size * m;
  const code = (x, y) => {
    const { size, modules } = d.modules;
    for (let r = 0; r < size; r++) {
      let c = 0;
      while (c < size) {
        if (!modules[r * size + c]) { c++; continue; }
        const c0 = c;
        while (c < size && modules[r * size + c]) c++;
        items.push({ rect: [x + c0 * m, y + r * m, (c - c0) * m, m] });
      }
    }
  };
  const lines = (list, x, y, size, bold = false, lead = 1.25) => {
    list.forEach((text, i) => items.push({ text, x, y: y + size + i * size * lead, size, bold: bold && i === 0 }));
    return y + size * lead * list.length;
  };
  const postage = `${d.currency} ${d.postage}`;
  const facts = [`Date ${d.date}`, `PSD ${d.deviceId}`, `Piece ${d.piece}  Lic ${d.license}`, `From ${d.origin} to ${d.destination}`];

  // The 4 × 6 in label; on a sheet the same label at the top left, with a cut line.
  const label4x6 = (ox, oy) => {
    const pad = 14;
    const cx = ox + 288 - pad - side;
    code(cx, oy + pad);
    items.push({ text: postage, x: ox + pad, y: oy + pad + 18, size: 18, bold: true });
    lines(facts, ox + pad, oy + pad + 24, 7.5);
    if (d.rateName) lines([d.rateName], ox + pad, oy + pad + 64, 7.5);
    const fy = oy + pad + side + 14;
    items.push({ text: 'FROM', x: ox + pad, y: fy, size: 6.5, bold: true });
    lines(d.from, ox + pad, fy + 3, 9);
    const ty = oy + 220;
    items.push({ line: [ox + pad, ty - 14, ox + 288 - pad, ty - 14] });
    items.push({ text: 'TO', x: ox + pad, y: ty, size: 8, bold: true });
    lines(d.to, ox + pad + 10, ty + 6, 14, true);
  };
  if (format === 'thermal') {
    label4x6(0, 0);
  } else if (format === 'a4' || format === 'letter') {
    const ox = 36;
    const oy = 36;
    label4x6(ox, oy);
    items.push({ line: [ox, oy, ox + 288, oy], dash: true }, { line: [ox + 288, oy, ox + 288, oy + 432], dash: true },
      { line: [ox + 288, oy + 432, ox, oy + 432], dash: true }, { line: [ox, oy + 432, ox, oy], dash: true });
    items.push({ text: 'Cut along the dashed line and stick the label on the piece.', x: ox, y: oy + 450, size: 8 });
  } else {
    // #10 envelope, landscape: sender top left, indicium top right (where a stamp goes),
    // recipient in the middle.
    const pad = 18;
    const cx = f.w - pad - side;
    code(cx, pad);
    const tx = cx - 118;
    items.push({ text: postage, x: tx, y: pad + 16, size: 16, bold: true });
    lines(facts, tx, pad + 22, 7);
    lines(d.from, pad, pad, 9, true);
    lines(d.to, 260, 150, 13, true);
  }
  return { w: f.w, h: f.h, items };
}

// ---------------------------------------------------------------- SVG

const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]);
const num = (x) => (Math.round(x * 100) / 100).toString();

/** The drawing as an SVG document (viewBox in points; sized by the caller's CSS). */
export function toSvg(drawing, title) {
  const out = [`<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${num(drawing.w)} ${num(drawing.h)}" role="img" aria-label="${esc(title)}">`,
    `<rect width="100%" height="100%" fill="#fff"/>`];
  const rects = drawing.items.filter((i) => i.rect).map((i) => `M${num(i.rect[0])} ${num(i.rect[1])}h${num(i.rect[2])}v${num(i.rect[3])}h${num(-i.rect[2])}z`);
  out.push(`<path fill="#000" shape-rendering="crispEdges" d="${rects.join('')}"/>`);
  for (const i of drawing.items) {
    if (i.text !== undefined) {
      out.push(`<text x="${num(i.x)}" y="${num(i.y)}" font-family="Helvetica, Arial, sans-serif" font-size="${i.size}"${i.bold ? ' font-weight="bold"' : ''}>${esc(i.text)}</text>`);
    } else if (i.line) {
      out.push(`<line x1="${num(i.line[0])}" y1="${num(i.line[1])}" x2="${num(i.line[2])}" y2="${num(i.line[3])}" stroke="#000" stroke-width="0.7"${i.dash ? ' stroke-dasharray="4 3"' : ''}/>`);
    }
  }
  out.push('</svg>');
  return out.join('');
}

// ---------------------------------------------------------------- PDF

// A PDF string literal in WinAnsiEncoding: printable ASCII as is, Latin-1 and the euro sign
// as octal escapes, anything else "?". The content stream stays 7-bit, so its length in
// characters is its length in bytes.
function pdfString(s) {
  let out = '(';
  for (const ch of String(s)) {
    const c = ch.codePointAt(0);
    if (ch === '(' || ch === ')' || ch === '\\') out += '\\' + ch;
    else if (c >= 0x20 && c < 0x7f) out += ch;
    else if (c >= 0xa0 && c <= 0xff) out += '\\' + c.toString(8).padStart(3, '0');
    else if (c === 0x20ac) out += '\\200';
    else if (c < 0x20) out += ' ';
    else out += '?';
  }
  return out + ')';
}

/** The drawing as a one-page PDF 1.4 (Uint8Array). */
export function toPdf(drawing, title = 'openpsd label') {
  const H = drawing.h;
  const ops = ['0 g'];
  const rects = drawing.items.filter((i) => i.rect);
  for (const i of rects) ops.push(`${num(i.rect[0])} ${num(H - i.rect[1] - i.rect[3])} ${num(i.rect[2])} ${num(i.rect[3])} re`);
  if (rects.length) ops.push('f');
  for (const i of drawing.items) {
    if (i.text !== undefined) {
      ops.push(`BT /${i.bold ? 'F2' : 'F1'} ${i.size} Tf ${num(i.x)} ${num(H - i.y)} Td ${pdfString(i.text)} Tj ET`);
    } else if (i.line) {
      ops.push(`${i.dash ? '[4 3] 0 d ' : '[] 0 d '}0.7 w ${num(i.line[0])} ${num(H - i.line[1])} m ${num(i.line[2])} ${num(H - i.line[3])} l S`);
    }
  }
  const content = ops.join('\n');
  const objects = [
    '<< /Type /Catalog /Pages 2 0 R >>',
    '<< /Type /Pages /Kids [3 0 R] /Count 1 >>',
    `<< /Type /Page /Parent 2 0 R /MediaBox [0 0 ${num(drawing.w)} ${num(drawing.h)}] /Resources << /Font << /F1 4 0 R /F2 5 0 R >> >> /Contents 6 0 R >>`,
    '<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>',
    '<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>',
    `<< /Length ${content.length} >>\nstream\n${content}\nendstream`,
    `<< /Title ${pdfString(title)} /Producer (openpsd web demo) >>`,
  ];
  let pdf = '%PDF-1.4\n';
  const offsets = [];
  objects.forEach((o, i) => {
    offsets.push(pdf.length);
    pdf += `${i + 1} 0 obj\n${o}\nendobj\n`;
  });
  const xref = pdf.length;
  pdf += `xref\n0 ${objects.length + 1}\n0000000000 65535 f \n`;
  for (const o of offsets) pdf += `${String(o).padStart(10, '0')} 00000 n \n`;
  pdf += `trailer\n<< /Size ${objects.length + 1} /Root 1 0 R /Info ${objects.length} 0 R >>\nstartxref\n${xref}\n%%EOF\n`;
  const bytes = new Uint8Array(pdf.length);
  for (let i = 0; i < pdf.length; i++) bytes[i] = pdf.charCodeAt(i);
  return bytes;
}
