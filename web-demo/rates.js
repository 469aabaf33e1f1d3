// The rates picker's rate card. The demo's back office publishes no postage rates: the
// vendor's rate tables (docs/rates.md) price the certificate meter's services, and the post
// office checks an indicium's signature and registers, not its postage against a product.
// So the page carries this card of its own, an illustration in euro: the product fixes the
// postage (the field is read-only), the weight rules products out, and "Other amount"
// (rate category 9) is free entry, bounded by the PSD's per-piece limit. The product's
// code is the indicium's rate category (docs/apdu.md § 5), so the signed indicium says
// which product was paid for.

export const CURRENCY = 'EUR';

export const RATES = [
  { code: 1, name: 'Letter', maxGrams: 20, postage: '0.85' },
  { code: 5, name: 'Postcard', maxGrams: 20, postage: '0.70' },
  { code: 2, name: 'Large letter', maxGrams: 500, postage: '1.60' },
  { code: 3, name: 'Maxi letter', maxGrams: 1000, postage: '2.70' },
  { code: 4, name: 'Parcel', maxGrams: 5000, postage: '6.99' },
  { code: 9, name: 'Other amount', maxGrams: null, postage: null },
];

export function rateByCode(code) {
  return RATES.find((r) => r.code === Number(code)) || null;
}

/** "Letter up to 20 g, EUR 0.85" (or "Other amount"). */
export function rateText(r) {
  if (!r) return '';
  if (r.postage === null) return `${r.name} (you enter the postage)`;
  return `${r.name} up to ${r.maxGrams >= 1000 ? `${r.maxGrams / 1000} kg` : `${r.maxGrams} g`}, ${CURRENCY} ${r.postage}`;
}

/** The name printed on the label for rate category `code` (an unknown code: its number). */
export function rateLabel(code) {
  const r = rateByCode(code);
  return r ? `${r.name} (rate ${r.code})` : `rate ${code}`;
}
