/**
 * The reading columns of ecoflow_measurements (sql/0001_measurements.sql), in table order, for the two
 * subsystems that work with them: the EcoFlow poller fills them from a device's quota, the rollups
 * aggregate them. One list, so that a column the table gains is read and rolled up alike.
 */
export const ECOFLOW_QUOTA_COLUMNS = [
  'soc_percent',
  'remain_time_min',
  'watts_in_sum',
  'watts_out_sum',
  'ac_out_watts',
  'dc_out_watts',
  'typec_out_watts',
  'usb_out_watts',
  'pv_in_watts',
  'car_watts',
  'usb1_watts',
  'usb2_watts',
  'qcusb1_watts',
  'qcusb2_watts',
  'typec1_watts',
  'typec2_watts',
  'inv_out_temp',
  'bms_temp',
  'bms_max_cell_temp',
  'bms_min_cell_temp',
  'mppt_temp',
  'inv_input_watts',
  'inv_ac_in_vol',
  'inv_out_vol',
  'inv_ac_in_amp',
  'inv_out_amp',
  'bms_amp',
  'bms_vol',
  'bms_min_cell_vol',
  'bms_max_cell_vol',
  'bms_remain_cap',
  'bms_full_cap',
  'bms_cycles',
] as const

/** Every reading column: the quota's, and the Wi-Fi signal that only the old poller's rows carry. */
export const ECOFLOW_READING_COLUMNS = [...ECOFLOW_QUOTA_COLUMNS, 'wifi_rssi'] as const

/** The quota columns the table stores as INTEGER (the EcoFlow mapping rounds them to whole numbers); the rest are NUMERIC. */
export const ECOFLOW_INTEGER_COLUMNS: ReadonlySet<(typeof ECOFLOW_QUOTA_COLUMNS)[number]> = new Set(
  [
    'soc_percent',
    'remain_time_min',
    'watts_in_sum',
    'watts_out_sum',
    'ac_out_watts',
    'dc_out_watts',
    'typec_out_watts',
    'usb_out_watts',
    'pv_in_watts',
    'car_watts',
    'usb1_watts',
    'usb2_watts',
    'qcusb1_watts',
    'qcusb2_watts',
    'typec1_watts',
    'typec2_watts',
    'bms_cycles',
  ],
)
